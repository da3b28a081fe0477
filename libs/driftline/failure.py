"""What kind of failure an exception is: a dependency that is away, or a record that is bad.

The runner's error policy (:meth:`driftline.runner.Runner.step`) treats the two
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

from functools import cache


class DependencyUnavailable(Exception):
    """A dependency (broker, schema registry, model registry, store) is down or timed out: retry, never dead-letter."""


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [DependencyUnavailable, ConnectionError, TimeoutError]
    try:  # the registry client and the schema registry client speak HTTP through httpx
        import httpx

        types += [httpx.TransportError]
    except ImportError:  # pragma: no cover - httpx is a dependency
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

    return {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT,
            KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.NETWORK_EXCEPTION}
