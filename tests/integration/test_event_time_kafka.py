"""Event time over a real broker: with 1 and 3 partitions of ``predictions``, an in-process
drift-detector runner over the Kafka bus counts every event in a PSI window's ``n`` or in its
window's ``late_events``, with no late event for in-order producers (default settings).

The session broker is shared with other modules, whose ``predictions`` topic has its own
partition count: this module's topics carry a prefix of their own (:class:`PrefixedBus`),
invisible to the services, which still read and write ``predictions``."""

from __future__ import annotations

import dataclasses
import time
import uuid

import numpy as np
import pytest

from driftline.bus.kafka import KafkaBus
from driftline.codec import Codec, registry_client
from driftline.entry.wiring import Context, make_runner
from driftline.testing.event_time import (SPACING_MS, T0, WINDOW_MS, ProfileRegistry, check_every_event_counted,
                                          closed_windows, drain, predictions, produce, window_rows)
from driftline.topics import ALL_TOPICS, PREDICTIONS

N = 6_000  # 120 s of event time: windows up to 60 s close (the default lateness is 60 s)


class _Prefixed:
    """Forwards to a producer or consumer, renaming topics on the way in and back out."""

    def __init__(self, inner, prefix: str):
        self._inner, self._prefix = inner, prefix

    def _out(self, offsets):
        return {(self._prefix + t, p): o for (t, p), o in offsets.items()}

    def _back(self, offsets):
        n = len(self._prefix)
        return {(t[n:], p): o for (t, p), o in offsets.items()}

    def produce(self, topic, value, key=None):
        return self._inner.produce(self._prefix + topic, value, key)

    def poll_batch(self, max_records, timeout_s, linger_s=0.0):
        n = len(self._prefix)
        batch = self._inner.poll_batch(max_records, timeout_s, linger_s)
        return [dataclasses.replace(m, topic=m.topic[n:]) for m in batch]

    def commit(self, offsets):
        return self._inner.commit(self._out(offsets))

    def seek(self, offsets):
        return self._inner.seek(self._out(offsets))

    def positions(self):
        return self._back(self._inner.positions())

    def lag(self):
        return self._back(self._inner.lag())

    def assigned(self):
        n = len(self._prefix)
        return {(t[n:], p) for t, p in self._inner.assigned()}

    def __getattr__(self, name):
        return getattr(self._inner, name)


class PrefixedBus:
    """A Kafka bus whose topics and groups carry a prefix (this module's own topics)."""

    def __init__(self, bus: KafkaBus, prefix: str):
        self._bus, self.prefix = bus, prefix

    def create_topics(self, topics):
        self._bus.create_topics({self.prefix + t: n for t, n in topics.items()})

    def producer(self):
        return _Prefixed(self._bus.producer(), self.prefix)

    def consumer(self, group, topics):
        return _Prefixed(self._bus.consumer(self.prefix + group, [self.prefix + t for t in topics]), self.prefix)

    def close(self):
        self._bus.close()


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_every_event_is_in_a_window_over_kafka(partitions, kafka_bootstrap, schema_registry_url, settings, store):
    # The store is the session's: a drift-detector state saved by another test (its snapshot, and
    # offsets of other topics) would be resumed here. Each run starts without one.
    store.command("ALTER TABLE service_state DELETE WHERE service = 'drift-detector' SETTINGS mutations_sync = 2")
    settings = settings.model_copy(update={"partitions": partitions, "drift_window_size": WINDOW_MS,
                                           "batch_size": 500, "poll_timeout_s": 0.5})
    bus = PrefixedBus(KafkaBus(kafka_bootstrap), f"et-{uuid.uuid4().hex[:8]}-")
    bus.create_topics({t: partitions for t in ALL_TOPICS})
    codec = Codec(registry_client(schema_registry_url))
    runner = make_runner("drift-detector", Context(settings, bus, codec, store, ProfileRegistry()))
    try:
        # Every partition assigned before anything is produced (a fresh topic's metadata can lag).
        deadline = time.monotonic() + 60
        while {p for t, p in runner.consumer.assigned() if t == PREDICTIONS} != set(range(partitions)):
            assert time.monotonic() < deadline, runner.consumer.assigned()
            runner.step(0.2)
        ids = np.arange(N)
        times = T0 + ids * SPACING_MS
        produce(bus, codec, predictions(ids, times))
        drain(runner, N, timeout_s=90)
        rows = window_rows(store)
        closed = closed_windows(ids, times, partitions, settings.drift_allowed_lateness_ms)
        assert len(closed) >= 2
        assert check_every_event_counted(rows, times, closed) == 500 * len(closed)
        assert rows.late == {} and rows.ahead == {}

        late_ids = np.arange(N, N + 100)  # an out-of-order producer, long after the first window closed
        late_times = T0 + (late_ids - N) * 50
        produce(bus, codec, predictions(late_ids, late_times))
        drain(runner, N + 100, timeout_s=90)
        rows = window_rows(store)
        assert rows.late == {(T0, T0 + WINDOW_MS): 100}
        check_every_event_counted(rows, np.concatenate([times, late_times]), closed)
    finally:
        runner.close()
