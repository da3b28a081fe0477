"""The registry's outbox publisher: model events reach the bus after their change is durable.

The registry writes each change's ModelEvent into its ``outbox`` table in the
same SQLite transaction as the change (see :class:`driftline.registry.Registry`).
:class:`OutboxPublisher` sends the rows that are not yet published, oldest first,
and marks each one published only once the bus has acknowledged it. A failure
(the broker is down) is retried with capped exponential backoff; nothing after
the failed row is sent before it, so predictors see alias moves in their order.

Delivery is at-least-once: a crash between the bus's acknowledgement and the
mark sends that event again at the next start (consumers of model events apply
them idempotently: an alias pointing at a version). An outage alone sends each
event once, because ``send`` returns or raises only once the bus has decided.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from driftline.failure import Backoff

log = logging.getLogger(__name__)


class OutboxSource(Protocol):
    """What the publisher reads and marks (a :class:`driftline.registry.Registry`)."""

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]: ...
    def mark_published(self, ids: list[int]) -> None: ...


class OutboxPublisher:
    """Drain a registry's outbox to the bus, in order, until every event is acknowledged.

    Parameters
    ----------
    source
        The registry (its ``outbox`` table).
    send
        Publish one ModelEvent and return only once the bus acknowledged it; raise otherwise.
    backoff
        Wait between attempts after a failure.
    poll_s
        In :meth:`run`, how often the outbox is checked when nobody calls :meth:`wake`
        (a change made by another process sharing the registry home).
    batch
        Rows read from the outbox at a time.

    Examples
    --------
    >>> sent = []
    >>> class Rows:
    ...     rows = {1: {"model": "m"}, 2: {"model": "n"}}
    ...     def pending_events(self, limit=100): return sorted(self.rows.items())[:limit]
    ...     def mark_published(self, ids): [self.rows.pop(i) for i in ids]
    >>> OutboxPublisher(Rows(), sent.append).drain()
    2
    >>> [e["model"] for e in sent]
    ['m', 'n']
    """

    def __init__(self, source: OutboxSource, send: Callable[[dict[str, Any]], None], *,
                 backoff: Backoff = Backoff(0.2, 10.0), poll_s: float = 1.0, batch: int = 100):
        self.source = source
        self.send = send
        self.backoff = backoff
        self.poll_s = poll_s
        self.batch = batch
        self.published = 0
        self.failures = 0  # consecutive failed attempts; 0 once the outbox is drained
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drain(self) -> int:
        """Send every pending event in order; returns how many were published.

        Raises the first send failure; the events from the failed one on stay pending.
        """
        sent = 0
        while True:
            rows = self.source.pending_events(self.batch)
            if not rows:
                return sent
            for row_id, event in rows:
                self.send(event)
                self.source.mark_published([row_id])  # one at a time: a failure later re-sends nothing before it
                sent += 1
                self.published += 1

    def wake(self, _event: Any = None) -> None:
        """Drain now (a registry listener: called after each committed change)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Drain now (events a crash left behind), then whenever woken or every ``poll_s``, until ``stop``."""
        while not stop.is_set():
            self._wake.clear()  # before draining: a change committed during the drain wakes the next one
            try:
                self.drain()
            except Exception as exc:  # noqa: BLE001 - the bus is away: keep the rows, try again later
                self.failures += 1
                delay = self.backoff.delay(self.failures - 1)
                log.warning("registry outbox: publishing a model event failed (attempt %d), retrying in %.1fs: %s",
                            self.failures, delay, exc)
                stop.wait(delay)
                continue
            if self.failures:
                log.warning("registry outbox: published again after %d failed attempts", self.failures)
            self.failures = 0
            self._wake.wait(self.poll_s)

    def start(self) -> OutboxPublisher:
        """Run in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="registry-outbox", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
