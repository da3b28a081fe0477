"""A stateless runner with ``overlap_acks`` (the predictor's): it handles the next batch while
the broker acknowledges the last one's records, and commits a batch only once they all are.

The producer here acknowledges when the test says so, as a slow broker would; the records
themselves are on the in-process log at once, where a consumer of the output topic reads them.
"""

from __future__ import annotations

import pytest

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.failure import Backoff, DependencyUnavailable
from driftline.runner import Incoming, Output, Runner
from driftline.testing.samples import SAMPLES
from driftline.topics import ALL_TOPICS, LABELED, LABELS

FAST = Backoff(initial_s=0.001, max_s=0.01)


class Relabel:
    """Stateless: publishes one ``labeled`` record per label, keyed by its event id."""

    name = "relabel"
    topics = [LABELS]

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        out = Output()
        for item in batch:
            out.publish(LABELED, item.record["event_id"], {**SAMPLES[LABELED], "event_id": item.record["event_id"]})
        return out


class Counter(Relabel):
    name = "relabel-stateful"

    def snapshot(self) -> bytes:
        return b""

    def restore(self, snapshot: bytes) -> None:
        pass


class RefusedRecord(Exception):
    """A delivery failed for a reason of the record (not transient)."""


class SlowBroker:
    """A MemoryBus whose producers' records are acknowledged only when :meth:`acknowledge` says."""

    def __init__(self, bus: MemoryBus):
        self.bus = bus
        self.marks = 0  # marks made so far; mark i (from 1) is acknowledged once i <= acknowledged
        self.acknowledged = 0
        self.lost: set[int] = set()  # marks some of whose records failed to arrive (transient)
        self.refused: set[int] = set()  # marks with a record the broker refuses for good (too large)
        self.flushes = 0
        self.produced = 0

    def acknowledge(self, through: int | None = None) -> None:
        self.acknowledged = self.marks if through is None else through

    def producer(self):
        broker, producer = self, self.bus.producer()

        class Producer:
            def produce(self, topic, value, key=None):
                broker.produced += 1
                producer.produce(topic, value, key)

            def flush(self, timeout_s: float = 30.0):
                broker.flushes += 1
                broker.acknowledge()  # waiting gets every record acknowledged

            def mark(self) -> int:
                broker.marks += 1
                return broker.marks

            def acknowledged(self, mark: int) -> bool:
                if mark in broker.lost and mark <= broker.acknowledged:
                    raise DependencyUnavailable("broker: 1 records not delivered: [labeled: _MSG_TIMED_OUT]")
                if mark in broker.refused and mark <= broker.acknowledged:
                    raise RefusedRecord("1 records failed: [labeled: MSG_SIZE_TOO_LARGE]")
                return mark <= broker.acknowledged

        return Producer()

    def __getattr__(self, name):
        return getattr(self.bus, name)


@pytest.fixture
def codec() -> Codec:
    return Codec(registry_client(None))


def slow_broker(codec: Codec, labels: int) -> SlowBroker:
    bus = MemoryBus(retention_bytes=64 << 20)
    bus.create_topics({t: 1 for t in ALL_TOPICS})
    producer = bus.producer()
    for i in range(labels):
        producer.produce(LABELS, codec.encode(LABELS, {**SAMPLES[LABELS], "event_id": f"e{i}"}))
    return SlowBroker(bus)


def committed(broker: SlowBroker, service: str = "relabel") -> int:
    return broker.bus._groups[f"driftline-{service}"].committed.get((LABELS, 0), 0)


def published(broker: SlowBroker, codec: Codec) -> list[str]:
    reader = broker.bus.consumer("reader", [LABELED])
    ids = []
    while batch := reader.poll_batch(1000, 0.0):
        ids += [codec.decode(m.topic, m.value)["event_id"] for m in batch]
    return ids


def test_batches_are_handled_before_acknowledgement_and_committed_only_after(store, codec) -> None:
    broker = slow_broker(codec, 300)
    runner = Runner(Relabel(), broker, codec, store, batch_size=100, backoff=FAST, overlap_acks=True)
    assert [runner.step(0.0) for _ in range(3)] == [100, 100, 100]  # no batch waited for the broker
    assert committed(broker) == 0 and broker.flushes == 0
    assert len(published(broker, codec)) == 300

    broker.acknowledge(through=2)
    assert runner.step(0.0) == 0  # idle: commits what was acknowledged since
    assert committed(broker) == 200

    broker.acknowledge()
    runner.step(0.0)
    assert committed(broker) == 300
    assert broker.produced == 300  # each record once


def two_batches_acknowledged(store, codec: Codec, labels: int) -> tuple[SlowBroker, Runner]:
    broker = slow_broker(codec, labels)
    runner = Runner(Relabel(), broker, codec, store, batch_size=100, backoff=FAST, overlap_acks=True)
    runner.step(0.0)
    runner.step(0.0)
    broker.acknowledge()
    return broker, runner


def test_a_batch_that_lost_records_is_produced_again_and_committed_once_acknowledged(store, codec) -> None:
    broker, runner = two_batches_acknowledged(store, codec, 250)
    broker.lost = {2}  # a record of the second batch timed out
    runner.step(0.0)  # the third batch; the commit finds the first acknowledged, the second failed

    assert committed(broker) == 100  # nothing past the batch that lost a record
    broker.acknowledge()  # its records, produced again, arrive
    runner.step(0.0)
    assert committed(broker) == 250
    ids = published(broker, codec)
    assert set(ids) == {f"e{i}" for i in range(250)}  # nothing lost...
    assert len(ids) == 250 + 100  # ...and the second batch went out twice (a replay's duplicates)


def test_a_record_refused_for_good_stops_the_service_and_nothing_after_it_is_committed(store, codec) -> None:
    broker, runner = two_batches_acknowledged(store, codec, 300)
    broker.refused = {2}
    with pytest.raises(RefusedRecord):
        runner.step(0.0)
    assert committed(broker) == 100
    runner.close()  # as `driftline serve` does after the error: still nothing past the refused record
    assert committed(broker) == 100


def test_close_commits_the_batches_in_flight(store, codec) -> None:
    broker = slow_broker(codec, 150)
    runner = Runner(Relabel(), broker, codec, store, batch_size=100, backoff=FAST, overlap_acks=True)
    runner.step(0.0)
    runner.step(0.0)
    assert committed(broker) == 0
    runner.close()
    assert committed(broker) == 150


def test_too_many_batches_in_flight_waits_for_the_broker(store, codec, monkeypatch) -> None:
    monkeypatch.setattr("driftline.runner.MAX_UNACKNOWLEDGED_BATCHES", 2)
    broker = slow_broker(codec, 500)
    runner = Runner(Relabel(), broker, codec, store, batch_size=100, backoff=FAST, overlap_acks=True)
    runner.step(0.0)
    runner.step(0.0)
    assert committed(broker) == 0 and broker.flushes == 0
    runner.step(0.0)  # a third in flight: this checkpoint waits
    assert broker.flushes == 1 and committed(broker) == 300


def test_a_stateful_service_cannot_overlap_its_commits(store, codec) -> None:
    broker = slow_broker(codec, 1)
    with pytest.raises(ValueError, match="needs each commit before the next batch"):
        Runner(Counter(), broker, codec, store, overlap_acks=True)


def test_without_overlap_every_batch_waits_and_commits(store, codec) -> None:
    broker = slow_broker(codec, 200)
    runner = Runner(Relabel(), broker, codec, store, batch_size=100, backoff=FAST)
    runner.step(0.0)
    assert broker.flushes == 1 and committed(broker) == 100
