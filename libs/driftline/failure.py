"""What kind of failure an exception is: a dependency that is away, or a record that is bad.

The runner's error policy (:meth:`driftline.runner.Runner.process`) treats the two
kinds differently:

- **transient**: the broker, the schema registry, the model registry or the
  store cannot be reached, or did not answer in time. The same work is retried
  with capped exponential backoff; nothing is dead-lettered because of it, and
  the service reports itself unhealthy until it succeeds again.
- **anything else** is a property of the input: the record that raises it is
  dead-lettered with the exception, and the runner goes on with the next one.

Code that knows a failure is transient and would otherwise raise something
generic raises :class:`DependencyUnavailable`.

Examples
--------
>>> is_transient(DependencyUnavailable("registry: connection refused"))
True
>>> is_transient(ConnectionRefusedError(111, "Connection refused"))
True
>>> is_transient(ValueError("Input X contains infinity"))
False
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class DependencyUnavailable(Exception):
    """A dependency (broker, schema registry, model registry, store) is down or timed out: retry, never dead-letter."""


class CommitRefused(Exception):
    """The bus refused an offset commit because the group moved on (a rebalance): not a failure of
    the data, the batch will be delivered again to whoever owns its partitions now."""


class Stopped(Exception):
    """A stop was requested while waiting for a dependency: the work in hand is abandoned, uncommitted."""


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [DependencyUnavailable, ConnectionError, TimeoutError]
    for module in ("httpx", "httpx2"):  # the registry clients speak HTTP through httpx (confluent's prefers httpx2)
        try:
            types.append(__import__(module).TransportError)
        except ImportError:
            pass
    try:  # clickhouse-connect raises OperationalError when the server cannot be reached
        from clickhouse_connect.driver.exceptions import OperationalError

        types.append(OperationalError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_TRANSIENT = _transient_types()


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) means a dependency is away."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _TRANSIENT):
            return True
        if _server_error(exc):  # a registry answering 5xx is restarting or overloaded, not judging the record
            return True
        args = getattr(exc, "args", None)
        if args and hasattr(args[0], "retriable"):  # confluent_kafka.KafkaError inside KafkaException
            try:
                if args[0].retriable() or args[0].code() in _kafka_transient_codes():
                    return True
            except Exception:  # noqa: BLE001 - not a KafkaError after all
                pass
        exc = exc.__cause__ or exc.__context__
    return False


@cache
def _kafka_transient_codes() -> set[int]:
    from confluent_kafka import KafkaError

    # Client-side codes (leading underscore) are not "retriable" in librdkafka's sense, yet each
    # means the cluster is (re)starting or unreachable: a commit after a broker restart fails
    # with _WAIT_COORD until the group coordinator is found again.
    names = ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_MSG_TIMED_OUT", "_TIMED_OUT_QUEUE", "_WAIT_COORD",
             "_RESOLVE", "REQUEST_TIMED_OUT", "NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE",
             "COORDINATOR_LOAD_IN_PROGRESS", "NETWORK_EXCEPTION", "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION")
    return {getattr(KafkaError, name) for name in names if hasattr(KafkaError, name)}


def _server_error(exc: BaseException) -> bool:
    """An HTTP 5xx from the model registry (httpx.HTTPStatusError) or the schema registry (SchemaRegistryError)."""
    status = getattr(exc, "http_status_code", None)  # confluent_kafka SchemaRegistryError
    if status is None:
        response = getattr(exc, "response", None)  # httpx.HTTPStatusError
        status = getattr(response, "status_code", None)
    return isinstance(status, int) and status >= 500


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: ``initial_s``, doubling, never more than ``max_s``.

    Examples
    --------
    >>> [Backoff(0.5, 4.0).delay(n) for n in range(6)]
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    """

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** min(attempt, 62))


class Outage:
    """Whether something is waiting on a dependency, and the once-per-outage log lines.

    ``on_change(healthy)`` is called when the state flips (a gauge); :meth:`down` logs the
    first failure of an outage only, :meth:`up` logs how long it lasted.
    """

    def __init__(self, name: str, on_change: Callable[[bool], None] | None = None):
        self.name = name
        self.on_change = on_change
        self.since: float | None = None
        self.what = ""
        if on_change is not None:
            on_change(True)

    @property
    def healthy(self) -> bool:
        return self.since is None

    def down(self, what: str, exc: BaseException) -> None:
        if self.since is None:
            self.since, self.what = time.monotonic(), what
            log.warning("%s: unhealthy: %s unavailable (%s: %s); waiting and retrying with backoff",
                        self.name, what, type(exc).__name__, _short(exc))
            if self.on_change is not None:
                self.on_change(False)

    def up(self) -> None:
        if self.since is not None:
            log.warning("%s: healthy again: %s answered after %.1fs", self.name, self.what,
                        time.monotonic() - self.since)
            self.since = None
            if self.on_change is not None:
                self.on_change(True)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def retry_transient(work: Callable[[], T], what: str, outage: Outage, backoff: Backoff,
                    stop: threading.Event | None = None, on_retry: Callable[[], None] | None = None) -> T:
    """``work()``, retried with ``backoff`` for as long as it fails transiently.

    Any other exception propagates at once. ``on_retry`` runs before each new attempt (a
    rollback). A set ``stop`` interrupts the wait and raises :class:`Stopped`.
    """
    attempt = 0
    while True:
        try:
            result = work()
        except Exception as exc:
            if not is_transient(exc):
                raise
            outage.down(what, exc)
            log.debug("%s: %s failed transiently (attempt %d): %s", outage.name, what, attempt + 1, exc)
            delay = backoff.delay(attempt)
            if stop is not None:
                if stop.wait(delay):
                    raise Stopped(f"{outage.name}: stopped while waiting for {what}") from exc
            elif delay > 0:
                time.sleep(delay)
            attempt += 1
            if on_retry is not None:
                on_retry()
            continue
        outage.up()
        return result
