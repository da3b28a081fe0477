"""driftline's KafkaBus against a real broker: what the runner's checkpoint relies on.

Produce (idempotent, acks=all, the same partitioner as the in-process bus), consume
in batches, commit by hand; a consumer restarted in its group resumes exactly where
the commits say; ``seek`` before the assignment is applied when it comes; and a
runner turns bytes it cannot decode into dead letters on the ``dlq`` topic and in
the ``dead_letters`` table, with the bytes and where they were found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.bus import next_offsets, partition_for
from driftline.bus.kafka import KafkaBus, KafkaConsumer
from driftline.codec import Codec, registry_client
from driftline.runner import Incoming, Output, Runner
from driftline.store import Store
from driftline.testing.kafka import free_port
from driftline.topics import ALL_TOPICS, DLQ, FEATURES

TIMEOUT_S = 60.0


def _topic(bus: KafkaBus, partitions: int = 3) -> str:
    topic = f"bus-{uuid.uuid4().hex[:12]}"
    bus.create_topics({topic: partitions})
    return topic


def _produce(bus: KafkaBus, topic: str, n: int, first: int = 0) -> None:
    producer = bus.producer()
    for i in range(first, first + n):
        producer.produce(topic, f"v{i}".encode(), key=f"k{i % 97}".encode())
    producer.flush()


def _drain(consumer: KafkaConsumer, until: int, batch: int = 100, commit: bool = True) -> list:
    """Poll batches of at most ``batch`` until ``until`` messages came, committing after each."""
    got, deadline = [], time.monotonic() + TIMEOUT_S
    while len(got) < until and time.monotonic() < deadline:
        messages = consumer.poll_batch(batch, 0.5)
        assert len(messages) <= batch
        got.extend(messages)
        if messages and commit:
            consumer.commit(next_offsets(messages))
    return got


def _committed(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: tp.offset for tp in probe.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                                   timeout=10)}
    finally:
        probe.close()


@pytest.fixture
def bus(kafka_bootstrap: str) -> KafkaBus:
    return KafkaBus(kafka_bootstrap)


def test_produce_consume_in_batches_and_commit_by_hand(bus: KafkaBus, kafka_bootstrap: str) -> None:
    topic = _topic(bus)
    _produce(bus, topic, 3000)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(group, [topic])
    try:
        got = _drain(consumer, 3000, batch=250)
        assert sorted(m.value for m in got) == sorted(f"v{i}".encode() for i in range(3000))  # none lost, none twice
        for m in got:  # librdkafka's consistent partitioner == the in-process bus's, so keys land alike
            assert m.partition == partition_for(m.key, 3)
        for key in {m.key for m in got}:  # one key's records in the order they were produced
            values = [int(m.value[1:]) for m in got if m.key == key]
            assert values == sorted(values)
        assert {m.partition for m in got} == {0, 1, 2}
        assert consumer.poll_batch(100, 0.5) == []
        committed = _committed(kafka_bootstrap, group, topic)
        assert committed == {p: sum(1 for m in got if m.partition == p) for p in range(3)}
        assert consumer.positions() == {(topic, p): committed[p] for p in range(3)}
    finally:
        consumer.close()


def test_poll_batch_waits_for_the_first_record_only(bus: KafkaBus) -> None:
    """The bus contract: up to max_records, waiting at most timeout_s *for the first*. A quiet
    stream must not hold each record until a full batch or the timeout (that is latency)."""
    topic = _topic(bus)
    _produce(bus, topic, 1)
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:8]}", [topic])
    try:
        assert len(_drain(consumer, 1)) == 1  # assigned and fetching
        _produce(bus, topic, 5, first=1)
        started = time.monotonic()
        got = consumer.poll_batch(1000, 10.0)
        took = time.monotonic() - started
        assert got and took < 2.0, f"{len(got)} records after {took:.2f}s"
        got += _drain(consumer, 5 - len(got))
        assert sorted(m.value for m in got) == [f"v{i}".encode() for i in range(1, 6)]
    finally:
        consumer.close()


def test_poll_batch_flushes_by_size_or_by_linger(bus: KafkaBus) -> None:
    """Micro-batches (issue 12): once a record is there the poll returns when max_records are,
    or linger_s after the first, whichever comes first; never after the whole poll timeout."""
    topic = _topic(bus)
    _produce(bus, topic, 1)
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:8]}", [topic])
    try:
        assert len(_drain(consumer, 1)) == 1  # assigned and fetching
        _produce(bus, topic, 20, first=1)
        started = time.monotonic()
        full = consumer.poll_batch(5, 30.0, linger_s=30.0)
        assert len(full) == 5 and time.monotonic() - started < 15.0  # by size, long before its linger
        started = time.monotonic()
        rest = consumer.poll_batch(1000, 30.0, linger_s=0.3)
        rest += _drain(consumer, 15 - len(rest))
        assert time.monotonic() - started < 15.0  # by linger with fewer than 1000, not the 30 s timeout
        assert sorted(m.value for m in full + rest) == sorted(f"v{i}".encode() for i in range(1, 21))
    finally:
        consumer.close()


def test_a_restarted_consumer_resumes_from_its_commits(bus: KafkaBus, kafka_bootstrap: str) -> None:
    topic = _topic(bus)
    _produce(bus, topic, 1000)
    group = f"g-{uuid.uuid4().hex[:8]}"

    first = bus.consumer(group, [topic])
    committed = _drain(first, 400, batch=100)  # processed and committed
    in_hand = first.poll_batch(100, 5.0)  # polled, never committed: the process "dies" with these
    assert in_hand
    first.close()  # does not commit: enable.auto.commit is off

    second = bus.consumer(group, [topic])
    try:
        rest = _drain(second, 1000 - len(committed), batch=100)
        assert second.poll_batch(100, 1.0) == []
    finally:
        second.close()
    done = {(m.partition, m.offset) for m in committed}
    again = {(m.partition, m.offset) for m in rest}
    assert done.isdisjoint(again), "records committed before the restart were delivered again"
    assert {(m.partition, m.offset) for m in in_hand} <= again, "uncommitted records must be redelivered"
    assert len(done) + len(again) == 1000 and len(rest) == len(again)  # no loss, no duplicate
    assert _committed(kafka_bootstrap, group, topic) == {
        p: 1 + max(m.offset for m in committed + rest if m.partition == p) for p in range(3)}


def test_seek_before_assignment_applies_when_partitions_are_assigned(bus: KafkaBus) -> None:
    topic = _topic(bus)
    _produce(bus, topic, 600)
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:8]}", [topic])
    try:
        consumer.seek({(topic, 0): 50, (topic, 1): 7})  # nothing assigned yet: remembered for the assignment
        got = _drain(consumer, 600 - 57, batch=200)
        first = {p: min(m.offset for m in got if m.partition == p) for p in range(3)}
        assert first == {0: 50, 1: 7, 2: 0}
        assert len(got) == 600 - 57 and consumer.poll_batch(100, 0.5) == []

        consumer.seek({(topic, 2): 3})  # assigned now: applies at once
        again = _drain(consumer, 1, batch=500)
        assert again and {m.partition for m in again} == {2} and again[0].offset == 3
    finally:
        consumer.close()


def test_a_seek_applies_once_and_later_rebalances_resume_from_commits(bus: KafkaBus) -> None:
    """A seek made while assigned must not linger and rewind the partition when it comes back later."""
    topic = _topic(bus, partitions=2)
    _produce(bus, topic, 200)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = bus.consumer(group, [topic])
    second = None
    try:
        assert len(_drain(first, 200)) == 200
        first.seek({(topic, 0): 10, (topic, 1): 10})  # assigned: a replay from 10, once
        assert len(_drain(first, 200 - 20)) == 200 - 20

        # Someone joins the group (one partition moves there) and leaves again (it comes back).
        second = bus.consumer(group, [topic])
        _poll_until(lambda: second.assigned(), first, second)
        assert len(second.assigned()) == 1 and len(first.assigned()) == 1
        second.close()
        second = None
        after = _poll_until(lambda: len(first.assigned()) == 2, first)
        after += first.poll_batch(100, 2.0)
        assert after == [], f"{len(after)} committed records delivered again after the rebalance"
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_mark_is_acknowledged_once_the_broker_has_every_record_before_it(bus: KafkaBus) -> None:
    topic = _topic(bus)
    producer = bus.producer()
    for i in range(200):
        producer.produce(topic, f"v{i}".encode(), key=f"k{i}".encode())
    first = producer.mark()
    producer.produce(topic, b"after", key=b"k")
    second = producer.mark()
    deadline = time.monotonic() + TIMEOUT_S
    while not producer.acknowledged(first):
        assert time.monotonic() < deadline, "200 records not acknowledged in time"
        time.sleep(0.01)
    assert first.unacknowledged == 0  # every delivery report of the first mark served
    producer.flush()
    assert producer.acknowledged(second)
    assert producer.acknowledged(producer.mark())  # nothing since: acknowledged at once


def test_a_record_the_broker_refuses_fails_its_mark_for_good(bus: KafkaBus, kafka_bootstrap: str) -> None:
    """A failure stays with its mark even after a flush reported it: nothing after it is committed."""
    topic = f"bus-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "1000"})])[topic].result(30)
    producer = bus.producer()
    producer.produce(topic, os.urandom(5000), key=b"k")  # within the client's limit, over the topic's (incompressible)
    refused = producer.mark()
    with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE"):
        producer.flush()
    for _ in range(2):
        with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE"):
            producer.acknowledged(refused)
    producer.produce(topic, b"small", key=b"k")
    fine = producer.mark()
    producer.flush()
    assert producer.acknowledged(fine)


def test_before_a_rebalance_takes_partitions_the_hook_runs_while_they_are_still_assigned(bus: KafkaBus) -> None:
    """What an overlapping runner commits its batches in flight with."""
    topic = _topic(bus, partitions=2)
    _produce(bus, topic, 100)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = bus.consumer(group, [topic])
    held_when_revoked: list[set] = []
    first.before_revoke(lambda: held_when_revoked.append(first.assigned()))
    second = None
    try:
        got = _drain(first, 100, commit=False)
        assert len(got) == 100 and held_when_revoked == []
        first.commit(next_offsets(got))
        second = bus.consumer(group, [topic])
        _poll_until(lambda: second.assigned(), first, second)
        assert held_when_revoked and len(held_when_revoked[0]) == 2  # both, before one of them moved
        assert len(first.assigned()) == 1
    finally:
        first.close()
        if second is not None:
            second.close()


def _poll_until(condition, *consumers: KafkaConsumer, timeout_s: float = TIMEOUT_S) -> list:
    """Keep the consumers polling (a rebalance needs that) until ``condition()``; return what came."""
    got, deadline = [], time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the group did not rebalance in time"
        for consumer in consumers:
            got.extend(consumer.poll_batch(100, 0.2))
    return got


def test_a_consumer_that_fell_out_of_its_group_rejoins_and_gets_the_batch_again(kafka_bootstrap: str) -> None:
    """Processing a batch for longer than max.poll.interval.ms costs the membership; the commit then
    fails (ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID). That is a replay, not a crash: the consumer
    rejoins on its next poll and the uncommitted records come again."""
    bus = KafkaBus(kafka_bootstrap, extra={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                                           "max.poll.interval.ms": 6000})
    topic = _topic(bus, partitions=1)
    _produce(bus, topic, 50)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(group, [topic])
    try:
        batch = _drain(consumer, 1, batch=10, commit=False)
        # The slow batch itself: no poll while librdkafka gives up the membership after 6 s.
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        deadline = time.monotonic() + TIMEOUT_S
        while admin.describe_consumer_groups([group])[group].result(10).members:
            assert time.monotonic() < deadline, "still a member long after max.poll.interval.ms"
            time.sleep(0.2)
        assert consumer.commit(next_offsets(batch)) is False
        again = _drain(consumer, 50, batch=50)
        assert [m.offset for m in again] == list(range(50))  # the batch in hand first, nothing skipped
        assert _committed(kafka_bootstrap, group, topic, partitions=1) == {0: 50}
    finally:
        consumer.close()


# ------------------------------------------------------------------- undecodable records


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> Iterator[str]:
    """``driftline store serve`` in its own process, as in a deployment; the DSN carries its credentials."""
    from driftline.store.credentials import load_credentials

    root = tmp_path_factory.mktemp("bus-store")
    port = free_port()
    log = root / "store.log"
    credentials_file = root / "store-credentials.json"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.entry.cli", "store", "serve", "--path", str(root / "store"),
                                 "--port", str(port), "--credentials", str(credentials_file)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not _ping(url):
            assert proc.poll() is None, f"store endpoint exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"store endpoint not up:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        credentials = load_credentials(credentials_file)
        yield f"http://{credentials.user}:{credentials.password}@127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _ping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=1).content == b"Ok.\n"
    except httpx.HTTPError:
        return False


class Collect:
    """A service that keeps what it is handed."""

    name = f"bus-test-{uuid.uuid4().hex[:6]}"
    topics = [FEATURES]

    def __init__(self) -> None:
        self.seen: list[Incoming] = []

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        self.seen.extend(batch)
        return Output()


def test_undecodable_records_become_dead_letters_with_their_bytes(bus: KafkaBus, kafka_bootstrap: str,
                                                                  schema_registry_url: str, store_url: str) -> None:
    bus.create_topics({t: 3 for t in ALL_TOPICS})
    codec = Codec(registry_client(schema_registry_url))
    store = Store(store_url)
    store.migrate()
    service = Collect()
    runner = Runner(service, bus, codec, store, batch_size=100, poll_timeout_s=0.5)
    try:
        # Other tests share the broker's topics: start this group at their current ends.
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "probe"})
        ends = {t: {p: probe.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1] for p in range(3)}
                for t in (FEATURES, DLQ)}
        probe.close()
        runner.consumer.seek({(FEATURES, p): o for p, o in ends[FEATURES].items()})

        good = {"model": "credit", "event_id": "ok-1", "entity_id": "c1", "event_time": 1_767_225_600_000,
                "numeric_features": {"income": 1.0}, "categorical_features": {}}
        valid = codec.encode(FEATURES, good)
        garbage = {
            b"\xff\xfe not avro at all": "no magic byte",
            b"\x00\x7f\xff\xff\xf0\x01\x02": "an id the registry never issued",
            valid[:-7]: "a valid record cut short",
        }
        placed: dict[bytes, tuple[int, int]] = {}
        raw = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "consistent"})
        for i, payload in enumerate([*garbage, valid]):
            raw.produce(FEATURES, payload, key=f"entity-{i}".encode(),
                        on_delivery=lambda err, msg, p=payload: placed.__setitem__(p, (msg.partition(), msg.offset())))
        assert raw.flush(30) == 0 and len(placed) == 4

        deadline = time.monotonic() + TIMEOUT_S
        while runner.processed < 4 and time.monotonic() < deadline:
            runner.step()
        assert runner.processed == 4

        # The good record reached the service; the bad ones did not stop it.
        assert [item.record["event_id"] for item in service.seen] == ["ok-1"]
        assert _committed(kafka_bootstrap, f"driftline-{service.name}", FEATURES) == {
            p: ends[FEATURES][p] + sum(1 for part, _ in placed.values() if part == p) for p in range(3)}

        # On the dlq topic, as DeadLetter records any consumer can decode.
        reader = bus.consumer(f"dlq-{uuid.uuid4().hex[:8]}", [DLQ])
        reader.seek({(DLQ, p): o for p, o in ends[DLQ].items()})
        letters = [codec.decode(DLQ, m.value) for m in _drain(reader, 3, commit=False)]
        reader.close()
        assert sorted((d["payload"], d["topic"], d["partition"], d["offset"], d["service"]) for d in letters) == sorted(
            (p, FEATURES, *placed[p], service.name) for p in garbage)
        assert all(d["error"] for d in letters)

        # And in the dead_letters table, bytes intact.
        _, rows = store.query(
            "SELECT hex(payload), topic, partition, offset, key FROM dead_letters FINAL WHERE service = {s:String}",
            {"s": service.name})
        keys = {p: f"entity-{i}" for i, p in enumerate(garbage)}
        assert sorted(rows) == sorted((p.hex().upper(), FEATURES, *placed[p], keys[p]) for p in garbage)
    finally:
        runner.close()
        store.close()
