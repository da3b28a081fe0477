"""``driftline up``: every service in one long-running process, serving HTTP on one port.

One process, no infrastructure: the six services over the in-process bus and
chDB (:class:`driftline.entry.embedded.Embedded`, the demo's code path). On one
port (default 127.0.0.1:8000):

- ``POST /v1/events``, ``POST /v1/labels``: ingest (``DRIFTLINE_INGEST_TOKEN`` if set);
- ``/v1/models/...``, ``/v1/audit``: the registry API (writes need ``DRIFTLINE_REGISTRY_TOKEN``);
- ``GET /healthz``, ``GET /metrics`` (Prometheus text format), ``GET /`` the live dashboard.

The runners take turns in a background thread, so HTTP stays responsive while
they work. The bus keeps its log and committed offsets under ``HOME/bus``: SIGINT
or SIGTERM stops HTTP, lets the runners finish and checkpoint the batch in hand,
and exits 0; ``driftline up`` again on the same ``DRIFTLINE_HOME`` resumes from the
committed offsets and the saved detector and joiner state, so everything ingest
accepted is processed exactly once in the store.

chDB admits one process, so ``up`` also serves its store on a second loopback
port (the store endpoint, with the credentials file under ``DRIFTLINE_HOME``) and
writes ``HOME/up.json``; ``driftline sql``, ``report`` and the ``model`` commands
started with the same ``DRIFTLINE_HOME`` find it there (``Settings.resolved_store_dsn``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from driftline.config import Settings, UP_FILE, running_up

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``driftline up`` to the ``driftline`` parser."""
    up = sub.add_parser("up", help="run every service in one process and serve ingest, registry, metrics and "
                                   "a live dashboard on one port")
    up.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="port for ingest, registry, /metrics and the dashboard")
    up.add_argument("--store-port", type=int, default=0,
                    help="loopback port of the store endpoint for other driftline commands (default: a free one)")
    up.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    return run_up(args.host, args.port, store_port=args.store_port)


class Dispatch:
    """An ASGI app sending each request to the app owning its path prefix (first match wins)."""

    def __init__(self, routes: list[tuple[str, Any]], default: Any):
        self.routes, self.default = routes, default

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":  # the mounted apps need no startup or shutdown of their own
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope.get("path", "")
        for prefix, app in self.routes:
            if path == prefix or path.startswith(prefix + "/"):
                return await app(scope, receive, send)
        return await self.default(scope, receive, send)


def build_app(embedded, settings: Settings, runner_thread: threading.Thread):
    """The one-port application over a running :class:`Embedded`."""
    import prometheus_client
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    from driftline.entry import dashboard
    from driftline.services.ingest.app import create_app as ingest_app
    from driftline.services.registry.app import create_app as registry_app

    secret = lambda value: value.get_secret_value() if value else None  # noqa: E731
    ingest = ingest_app(embedded.ingest, token=secret(settings.ingest_token))
    registry = registry_app(embedded.registry, secret(settings.registry_token),
                            read_token=secret(settings.registry_read_token),
                            max_body_bytes=settings.registry_max_body_bytes)
    site = FastAPI(title="driftline up", version="1")

    @site.get("/", response_class=HTMLResponse)
    def index() -> str:
        return dashboard.page()

    @site.get("/dashboard.json")
    def dashboard_json() -> dict:
        return dashboard.snapshot(embedded.store, embedded.registry)

    @site.get("/healthz")
    def healthz() -> JSONResponse:
        alive = runner_thread.is_alive()
        processed = {runner.service.name: runner.processed for runner in embedded.runners}
        # A runner waiting for a dependency (the store, a registry) is alive but not working.
        unhealthy = [runner.service.name for runner in embedded.runners if not runner.healthy]
        status = "runners stopped" if not alive else f"waiting: {', '.join(unhealthy)}" if unhealthy else "ok"
        return JSONResponse({"status": status, "processed": processed, "unhealthy": unhealthy},
                            status_code=200 if alive and not unhealthy else 503)

    return Dispatch([("/v1/events", ingest), ("/v1/labels", ingest),
                     ("/v1/models", registry), ("/v1/audit", registry),
                     ("/metrics", prometheus_client.make_asgi_app())], site)


class _Server:
    """uvicorn's server without its own signal handling: ``run_up`` handles SIGINT/SIGTERM for both servers."""

    @staticmethod
    def make(app, sock: socket.socket):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=10)
        return Server(config), sock


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"driftline up: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_up(host: str, port: int, store_port: int = 0, settings: Settings | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns 0 after a clean stop (every runner checkpointed)."""
    from driftline.entry.embedded import Embedded
    from driftline.store.credentials import CREDENTIALS_FILENAME, load_or_create_credentials
    from driftline.store.server.app import StoreApp, is_loopback

    settings = settings or Settings()
    if settings.store_dsn:
        raise SystemExit("driftline up: DRIFTLINE_STORE_DSN is set; up runs on its own chDB store under "
                         "DRIFTLINE_HOME (unset it, or use `driftline serve` for distributed mode)")
    if not is_loopback(host) and not settings.ingest_token:
        print(f"driftline up: WARNING: listening on {host} with no DRIFTLINE_INGEST_TOKEN: anyone who reaches "
              "the port can post events and labels (see SECURITY.md)", file=sys.stderr, flush=True)
    other = running_up(settings.home)
    if other is not None:
        raise SystemExit(f"driftline up: already running for {settings.home} (pid {other['pid']}, {other['url']})")
    stopping = threading.Event()
    servers: list = []

    def on_signal(signum, _frame) -> None:
        stopping.set()
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    http_sock = _listen(host, port)
    store_sock = _listen("127.0.0.1", store_port)
    embedded = Embedded(settings, persistent=True)
    up_file = settings.home / UP_FILE
    stop_runners = threading.Event()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            embedded.run(stop_runners)
        except BaseException as exc:  # surfaced on /healthz and as the exit status
            log.exception("driftline up: the runners stopped")
            failure.append(exc)
            on_signal(None, None)

    runner_thread = threading.Thread(target=pump, name="driftline-runners", daemon=True)
    store_app = None
    try:
        store_app = StoreApp(str((settings.home / "store").resolve()),
                             load_or_create_credentials(
            Path(settings.store_credentials_file or settings.home / CREDENTIALS_FILENAME).absolute()))
        # chDB runs one statement at a time per process: the endpoint and the services take turns on one lock.
        store_app.engine._lock = embedded.store._lock
        servers[:] = [_Server.make(build_app(embedded, settings, runner_thread), http_sock)[0],
                      _Server.make(Dispatch([], store_app), store_sock)[0]]  # Dispatch: chDB stays open at shutdown
        if stopping.is_set():
            for server in servers:
                server.should_exit = True
        runner_thread.start()
        bound = http_sock.getsockname()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        store_url = f"http://127.0.0.1:{store_sock.getsockname()[1]}"
        _write_json(up_file, {"pid": os.getpid(), "url": url, "store_url": store_url})
        print(f"driftline up: serving on {url} (dashboard {url}/, metrics {url}/metrics); "
              f"store endpoint {store_url}; state in {settings.home.resolve()}", file=sys.stderr, flush=True)

        async def serve_both() -> None:
            await asyncio.gather(servers[0].serve(sockets=[http_sock]), servers[1].serve(sockets=[store_sock]))

        asyncio.run(serve_both())
    finally:
        up_file.unlink(missing_ok=True)
        stop_runners.set()
        if runner_thread.is_alive():
            runner_thread.join()
        embedded.close()
        if store_app is not None:
            store_app.engine.close()
        http_sock.close()
        store_sock.close()
    if failure:
        print(f"driftline up: the runners stopped: {type(failure[0]).__name__}: {failure[0]}", file=sys.stderr)
        return 1
    print("driftline up: stopped; every runner checkpointed", file=sys.stderr, flush=True)
    return 0


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
