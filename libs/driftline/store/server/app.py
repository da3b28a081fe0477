"""The HTTP side: the ASGI app speaking ClickHouse's HTTP interface, and the ways to start it."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import anyio.to_thread

from driftline.store.credentials import StoreCredentials, default_credentials_file, load_or_create_credentials
from driftline.store.server.access import StatementPolicy
from driftline.store.server.auth import Authenticator, refuse_browser_requests
from driftline.store.server.compression import choose_encoding, decode_body, encode_body
from driftline.store.server.engine import ChdbEngine, Outcome
from driftline.store.server.errors import ServerError
from driftline.store.server.options import RequestOptions, read_form, read_options
from driftline.store.server.sessions import SessionStore
from driftline.store.server.statements import DEFAULT_FORMAT, parse_statement

logger = logging.getLogger(__name__)

SERVER_NAME = "driftline-chdb"
KEEP_ALIVE_SECONDS = 30  # as ClickHouse's keep_alive_timeout
TEXT_FORMAT_PREFIXES = ("tabseparated", "tsv", "csv", "json", "pretty", "values", "xml", "markdown", "vertical",
                        "customseparated", "template", "raw", "linea", "sqlinsert", "prometheus", "null")  # fmt: skip


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def content_type(fmt: str) -> str:
    lowered = fmt.lower()
    if lowered.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lowered.startswith("json"):
        return "application/json; charset=UTF-8"
    if lowered.startswith(TEXT_FORMAT_PREFIXES):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


class StoreApp:
    """ASGI application: ClickHouse's HTTP interface over one ChdbEngine.

    Every request passes, in order: the browser check (any ``Origin`` is
    refused, ``/ping`` included), authentication (all but ``/ping``, before
    the body is read), and the access policy (before the engine sees the
    statement). The body is read in full before the engine lock is taken, so
    a slow client uploading an insert never holds up the others.

    Parameters
    ----------
    path
        The chDB data folder.
    credentials
        The user and password every request must carry; None only for
        ``--no-auth`` on loopback.
    allow_admin
        Run what the access policy would refuse (files, URLs, DROP, SYSTEM, ...).
    """

    def __init__(self, path: str, credentials: StoreCredentials | None, allow_admin: bool = False):
        self.engine = ChdbEngine(path, readonly_reads=not allow_admin)
        self.sessions = SessionStore()
        self.authenticator = Authenticator(credentials)
        self.policy = StatementPolicy(self.engine.table_functions, allow_admin=allow_admin)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            response = await self._http(scope, receive)
            await _send(send, response)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.engine.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Callable) -> HttpResponse:
        method, path = scope["method"], scope["path"]
        params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            refuse_browser_requests(headers)
            if path == "/ping" or (path == "/" and method in ("GET", "HEAD") and "query" not in params):
                return HttpResponse(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
            self.authenticator.check(headers, params)
        except ServerError as exc:
            logger.info("request refused with code %s", exc.code)  # never the credentials themselves
            return self._error(exc, params.get("query_id") or str(uuid.uuid4()))
        if path != "/":
            return HttpResponse(404, b"There is no handle " + path.encode() + b"\n", [("Content-Type", "text/plain")])
        body = await _read_body(receive)
        if body is None:  # the client went away mid-upload: never run a truncated insert
            return HttpResponse(400, b"Client disconnected before the request body was complete\n")
        return await anyio.to_thread.run_sync(self.respond, method, params, headers, body)

    def respond(self, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> HttpResponse:
        """Everything after the body has arrived: runs in a worker thread."""
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            return self._execute(method, {**params, "query_id": query_id}, headers, body)
        except ServerError as exc:
            logger.info("query %s failed with code %s", query_id, exc.code)
            return self._error(exc, query_id)
        except Exception as exc:  # a bug here must still reach the client as a ClickHouse error
            logger.exception("query %s: unexpected server failure", query_id)
            return self._error(ServerError.make(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)

    def _execute(self, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> HttpResponse:
        body = decode_body(body, headers.get("content-encoding"))
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            params = {**params, **read_form(headers["content-type"], body)}
            body = b""
        opts = read_options(params, method)
        stmt = parse_statement(opts.query, body, opts.default_format)
        if opts.readonly and not (stmt.returns_rows or stmt.kind in ("set", "use")):
            raise ServerError.make(164, "READONLY", "Cannot execute query in readonly mode (GET is read-only)")
        session = self.sessions.get(opts)
        decision = self.policy.check(stmt, self.engine.effective_settings(opts, session))
        outcome = self.engine.execute(stmt, opts, session, readonly=decision.engine_readonly)
        return self._success(outcome, opts, headers)

    def _success(self, outcome: Outcome, opts: RequestOptions, headers: dict[str, str]) -> HttpResponse:
        enabled = self.engine.http_compression_default if opts.http_compression is None else opts.http_compression
        encoding = choose_encoding(headers.get("accept-encoding"), enabled) if outcome.body else None
        body = encode_body(outcome.body, encoding)
        response = HttpResponse(200, body, self._common_headers(opts.query_id, outcome.timezone))
        response.headers.append(("X-ClickHouse-Summary", json.dumps(outcome.summary, separators=(",", ":"))))
        if outcome.result_format:
            response.headers.append(("X-ClickHouse-Format", outcome.result_format))
        response.headers.append(("Content-Type", content_type(outcome.result_format or DEFAULT_FORMAT)))
        if encoding:
            response.headers.append(("Content-Encoding", encoding))
        return response

    def _error(self, exc: ServerError, query_id: str) -> HttpResponse:
        text = exc.text if "(version " in exc.text else f"{exc.text} (version {self.engine.version})"
        headers = self._common_headers(query_id, self.engine.timezone)
        response = HttpResponse(exc.http_status, (text + "\n").encode(), headers)
        response.headers.append(("X-ClickHouse-Exception-Code", str(exc.code)))
        response.headers.append(("Content-Type", "text/plain; charset=UTF-8"))
        return response

    @staticmethod
    def _common_headers(query_id: str, timezone: str) -> list[tuple[str, str]]:
        return [
            ("X-ClickHouse-Server-Display-Name", SERVER_NAME),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", timezone),
            ("Keep-Alive", f"timeout={KEEP_ALIVE_SECONDS}"),
        ]


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    """The whole request body, or None if the client disconnected before sending all of it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send(send: Callable, response: HttpResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def make_app(path: str, credentials: StoreCredentials | None, allow_admin: bool = False) -> StoreApp:
    """Open the chDB store at ``path`` (this process becomes its only owner) and return the ASGI app."""
    return StoreApp(path, credentials, allow_admin=allow_admin)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (``0.0.0.0`` and ``::`` are not)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def serve(
    path: str,
    host: str = "127.0.0.1",
    port: int = 8123,
    *,
    credentials_file: Path,
    allow_admin: bool = False,
    no_auth: bool = False,
) -> None:
    """Serve the store until SIGINT/SIGTERM; the chDB connection is closed on the way out.

    Parameters
    ----------
    path
        The chDB data folder.
    host, port
        Where to listen. A host that is not loopback needs authentication.
    credentials_file
        Where the user and password are read, or created (0600) on first start.
    allow_admin
        Lift the access policy (files, URLs, DROP, SYSTEM ...): for an operator, never for services.
    no_auth
        Accept requests without credentials; refused unless ``host`` is loopback.
    """
    import uvicorn

    if no_auth and not is_loopback(host):
        raise SystemExit(f"refusing to serve the store on {host} without authentication: "
                         "--no-auth is for loopback only")
    credentials = None if no_auth else load_or_create_credentials(credentials_file)
    try:
        app = make_app(path, credentials, allow_admin=allow_admin)
    except RuntimeError as exc:  # chDB's wording hides the usual cause
        raise SystemExit(f"cannot open chDB store {path!r} (is another process serving it?): {exc}") from None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # URLs carry SQL, bind values and possibly passwords: keep them out of logs
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    print(f"serving the chDB store {path} on http://{host}:{port}", file=sys.stderr, flush=True)
    if credentials is None:
        print("authentication is OFF (--no-auth): any local process can use the store", file=sys.stderr, flush=True)
    else:
        print(f"user {credentials.user!r}; password in {credentials_file} (driftline clients read it from there)",
              file=sys.stderr, flush=True)
    if allow_admin:
        print("--allow-admin: file, URL and admin statements are NOT refused", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The endpoint's options (shared by ``driftline store serve`` and ``python -m driftline.store.server``)."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback unless told otherwise)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--credentials", type=Path, default=None,
                        help="user/password file, created 0600 on first start "
                             "(default DRIFTLINE_STORE_CREDENTIALS_FILE or DRIFTLINE_HOME/store-credentials.json)")
    parser.add_argument("--allow-admin", action="store_true",
                        help="also run statements that reach files, URLs and other systems, DROP, SYSTEM, ...")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without credentials (loopback only)")
    return parser


def serve_from_args(args: argparse.Namespace, path: str) -> None:
    """Start the endpoint as the parsed options say."""
    serve(path, args.host, args.port, credentials_file=(args.credentials or default_credentials_file()).absolute(),
          allow_admin=args.allow_admin, no_auth=args.no_auth)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a chDB store over the ClickHouse HTTP protocol.")
    parser.add_argument("--path", required=True, help="chDB data directory (opened by this process only)")
    args = build_parser(parser).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_from_args(args, args.path)
