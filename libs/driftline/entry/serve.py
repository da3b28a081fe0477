"""``driftline serve <service>``: one service as its own process over Kafka, a registry and a store.

Configuration is the ``DRIFTLINE_*`` environment (:class:`driftline.config.Settings`);
``DRIFTLINE_KAFKA_CONFIG`` may add librdkafka settings as a JSON object (security,
timeouts), e.g. ``{"security.protocol": "SASL_SSL", "session.timeout.ms": 6000}``.
SIGTERM or SIGINT lets a runner finish and checkpoint the batch in hand, then
the process exits 0; the HTTP services (ingest, registry) drain through uvicorn.

A dependency that is down at start (the broker, the store, the registries) is
waited for, with capped exponential backoff (``DRIFTLINE_RETRY_BACKOFF_*``): the
process logs what it waits for once, reports ``driftline_service_healthy 0`` on
its metrics port meanwhile, and a SIGTERM during the wait exits 0 at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from driftline import telemetry
from driftline.bus.kafka import KafkaBus
from driftline.codec import Codec, registry_client
from driftline.heap import settle_heap
from driftline.config import Settings
from driftline.failure import Backoff, Outage, Stopped, retry_transient
from driftline.store import Store
from driftline.topics import ALL_TOPICS, MODELS
from driftline.entry.wiring import RUNNER_SERVICES, Context, make_runner

log = logging.getLogger(__name__)

HTTP_SERVICES = ("ingest", "registry")
SERVICES = HTTP_SERVICES + tuple(RUNNER_SERVICES)


def _require(value: str | None, variable: str, service: str) -> str:
    if not value:
        raise SystemExit(f"driftline serve {service}: set {variable} (see README, Configuration)")
    return value


class Startup:
    """Waits for the dependencies a service needs at start, reporting the service unhealthy meanwhile.

    Each step is retried while it fails transiently (:func:`driftline.failure.is_transient`);
    a set ``stop`` (SIGTERM) ends the wait with :class:`driftline.failure.Stopped`.
    """

    #: How long one attempt to reach the broker may block: a SIGTERM is seen at least this often.
    BROKER_TIMEOUT_S = 5.0

    def __init__(self, service: str, settings: Settings, stop: threading.Event | None = None):
        self.stop = stop
        self.backoff = Backoff(settings.retry_backoff_initial_s, settings.retry_backoff_max_s)
        self.outage = Outage(service, on_change=lambda ok: telemetry.SERVICE_HEALTHY.labels(service).set(int(ok)))

    def wait_for(self, work, what: str):
        return retry_transient(work, what, self.outage, self.backoff, self.stop)


def _open_store(dsn: str) -> Store:
    store = Store(dsn)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def _context(settings: Settings, service: str, registry=None, startup: Startup | None = None) -> Context:
    startup = startup or Startup(service, settings)
    bus = KafkaBus(_require(settings.kafka_bootstrap, "DRIFTLINE_KAFKA_BOOTSTRAP", service), extra=settings.kafka_config)
    startup.wait_for(lambda: bus.create_topics({topic: settings.partitions for topic in ALL_TOPICS},
                                               timeout_s=Startup.BROKER_TIMEOUT_S),
                     f"the broker at {settings.kafka_bootstrap}")
    codec = Codec(registry_client(_require(settings.schema_registry_url, "DRIFTLINE_SCHEMA_REGISTRY_URL", service)))
    dsn = settings.resolved_store_dsn
    store = startup.wait_for(lambda: _open_store(dsn), f"the store at {_where(dsn)}")
    if registry is None:
        from driftline.registry.client import RegistryClient

        token = settings.registry_token.get_secret_value() if settings.registry_token else None
        read_token = settings.registry_read_token.get_secret_value() if settings.registry_read_token else None
        registry = RegistryClient(_require(settings.registry_url, "DRIFTLINE_REGISTRY_URL", service), token,
                                  read_token=read_token, trusted_types=settings.trusted_types)
    return Context(settings, bus, codec, store, registry, stop=startup.stop)


def _where(dsn: str) -> str:
    """A DSN without its credentials, for a log line."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else dsn


class CachedContracts:
    """Champion feature contracts for ingest, refreshed every ``ttl_s`` (aliases move rarely).

    While the registry cannot be reached, a contract already known keeps being used (and
    the refresh is retried after another ``ttl_s``): ingest keeps accepting events through
    a registry restart. A model never seen before cannot be validated, so that error shows.
    """

    def __init__(self, registry, ttl_s: float = 5.0):
        self.registry, self.ttl_s = registry, ttl_s
        self._cache: dict[str, tuple[float, object]] = {}

    def __call__(self, model: str):
        hit = self._cache.get(model)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            try:
                champion = self.registry.resolve(model, "champion")
            except Exception as exc:  # the registry is down or unreachable
                if hit is None:
                    raise
                log.warning("ingest: registry unreachable (%s); keeping %s's contract for %.0fs",
                            exc, model, self.ttl_s)
                hit = (time.monotonic(), hit[1])
            else:
                hit = (time.monotonic(), None if champion is None else champion.contract)
            self._cache[model] = hit
        return hit[1]


def serve(service: str, host: str, port: int, settings: Settings | None = None) -> int:
    settings = settings or Settings()
    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    if settings.metrics_port is not None:
        try:
            telemetry.start_server(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            raise SystemExit(f"driftline serve {service}: cannot serve metrics on "
                             f"{settings.metrics_host}:{settings.metrics_port} ({exc}); "
                             "set DRIFTLINE_METRICS_PORT to a free port") from None
        log.warning("%s: metrics on http://%s:%d/metrics", service, settings.metrics_host, settings.metrics_port)
    if service in HTTP_SERVICES:
        return _serve_http(service, host, port, settings)
    # Handlers first: a SIGTERM that arrives while the service connects still means "stop cleanly".
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    startup = Startup(service, settings, stop)
    try:
        ctx = _context(settings, service, startup=startup)
    except Stopped:
        log.warning("%s: stopped while waiting for %s", service, startup.outage.what)
        return 0
    try:
        try:
            # A service reads its dependencies as it starts (the joiner's pending labels, saved state).
            runner = startup.wait_for(lambda: make_runner(service, ctx), "the store or the registry")
        except Stopped:
            log.warning("%s: stopped while waiting for %s", service, startup.outage.what)
            return 0
        log.warning("%s: consuming %s", service, ", ".join(runner.service.topics))
        settle_heap()  # what the service built lives as long as the process
        try:
            runner.run(stop)
        finally:
            runner.close()
    finally:
        ctx.store.close()
    log.warning("%s: stopped after %d messages", service, runner.processed)
    return 0


def _serve_http(service: str, host: str, port: int, settings: Settings) -> int:
    import uvicorn

    # uvicorn drains on SIGTERM/SIGINT, then restores the handlers it found and raises the
    # signal again, so a process with the default handler dies of it (exit -15) after a clean
    # shutdown. Ours are installed first: a signal while connecting stops the server as soon
    # as it is up, and the re-raised one lands here, so a drained server exits 0.
    server: uvicorn.Server | None = None
    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        stopping.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    if service == "registry":
        from driftline.registry import Registry
        from driftline.registry.outbox import OutboxPublisher
        from driftline.services.registry.app import create_app

        registry = Registry(settings.registry_home, trusted_types=settings.trusted_types)
        registry.warm_load_probe()
        try:
            ctx = _context(settings, service, registry=registry, startup=Startup(service, settings, stopping))
        except Stopped:
            registry.close()
            return 0
        # The outbox's own producer, whose records time out before its flush stops waiting: a flush
        # returns only once the broker acknowledged or refused, so a retry never sends a record
        # that is still in flight a second time.
        timeout_s = settings.registry_outbox_timeout_s
        producer = KafkaBus(settings.kafka_bootstrap, extra={**settings.kafka_config,
                                                             "message.timeout.ms": int(timeout_s * 1000)}).producer()

        def publish(event: dict) -> None:
            producer.produce(MODELS, ctx.codec.encode(MODELS, event), key=event["model"].encode())
            producer.flush(timeout_s + 5.0)

        # Alias moves answer once committed with their event in the outbox; this thread publishes it
        # (at once, and again after a restart if the process died first) while HTTP goes on answering.
        outbox = OutboxPublisher(registry, publish, backoff=Backoff(0.2, settings.registry_outbox_backoff_max_s))
        registry.listeners.append(outbox.wake)
        registry.listeners.append(lambda event: telemetry.observe_model_event(service, event))
        outbox.start()
        for model in registry.models():  # the gauge starts from the champions already there
            champion = registry.resolve(model, "champion")
            if champion is not None:
                telemetry.CHAMPION_VERSION.labels(service, model).set(champion.version)
        token = settings.registry_token.get_secret_value() if settings.registry_token else None
        read_token = settings.registry_read_token.get_secret_value() if settings.registry_read_token else None
        app = create_app(registry, token, read_token=read_token, max_body_bytes=settings.registry_max_body_bytes)
    else:
        from driftline.services.ingest.app import create_app
        from driftline.services.ingest.gateway import IngestGateway
        from driftline.services.ingest.bounds import Bounds
        from driftline.services.ingest.logic import Ingest

        try:
            ctx = _context(settings, service, startup=Startup(service, settings, stopping))
        except Stopped:
            return 0
        ingest = Ingest(CachedContracts(ctx.registry), Bounds.from_settings(settings))
        # Dead letters travel on a producer of their own: a dlq delivery failure is never
        # reported against the events of a later request.
        app = create_app(IngestGateway(ingest, ctx.bus.producer(), ctx.codec, ctx.store,
                                       dlq_producer=ctx.bus.producer()),
                         token=settings.ingest_token.get_secret_value() if settings.ingest_token else None)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.should_exit = stopping.is_set()
    try:
        server.run()
    finally:
        ctx.store.close()
        if service == "registry":
            outbox.stop()
            registry.close()
    log.warning("%s: stopped", service)
    return 0
