import pytest

from driftline.bus import BusFull, next_offsets, partition_for
from driftline.bus.memory import MemoryBus


def fill(bus, topic, n, prefix="k"):
    producer = bus.producer()
    for i in range(n):
        producer.produce(topic, f"v{i}".encode(), key=f"{prefix}{i % 7}".encode())


def drain(consumer, max_records=100):
    out = []
    while batch := consumer.poll_batch(max_records, 0.0):
        out.extend(batch)
    return out


def test_partition_is_chosen_by_key_hash_and_offsets_count_up():
    bus = MemoryBus()
    bus.create_topics({"t": 4})
    fill(bus, "t", 70)
    messages = drain(bus.consumer("g", ["t"]))
    assert len(messages) == 70
    for m in messages:
        assert m.partition == partition_for(m.key, 4)
        assert isinstance(m.value, bytes)
    for p in range(4):
        offsets = [m.offset for m in messages if m.partition == p]
        assert offsets == list(range(len(offsets)))


def test_groups_are_independent_and_resume_from_committed_offsets():
    bus = MemoryBus()
    bus.create_topics({"t": 2})
    fill(bus, "t", 10)
    a = bus.consumer("a", ["t"])
    first = a.poll_batch(4, 0.0)
    a.commit(next_offsets(first))
    a.poll_batch(100, 0.0)  # read but never committed: a crash loses this progress
    a.close()
    resumed = drain(bus.consumer("a", ["t"]))
    assert len(first) + len(resumed) == 10
    assert {(m.partition, m.offset) for m in first}.isdisjoint({(m.partition, m.offset) for m in resumed})
    assert len(drain(bus.consumer("b", ["t"]))) == 10


def test_members_of_one_group_share_partitions():
    bus = MemoryBus()
    bus.create_topics({"t": 4})
    fill(bus, "t", 40)
    one, two = bus.consumer("g", ["t"]), bus.consumer("g", ["t"])
    got_one, got_two = drain(one), drain(two)
    assert len(got_one) + len(got_two) == 40
    assert {m.partition for m in got_one}.isdisjoint({m.partition for m in got_two})


def test_producers_get_backpressure_until_the_slowest_group_commits():
    bus = MemoryBus(max_lag_bytes=100, retention_bytes=0)
    bus.create_topics({"t": 1})
    consumer = bus.consumer("g", ["t"])
    producer = bus.producer()
    with pytest.raises(BusFull):
        for i in range(100):
            producer.produce("t", b"x" * 10)
    assert not producer.room("t")
    consumer.commit(next_offsets(drain(consumer)))
    assert producer.room("t")
    producer.produce("t", b"y")
    assert [m.value for m in drain(consumer)] == [b"y"]


def test_a_topic_nobody_reads_keeps_only_its_retention():
    bus = MemoryBus(retention_bytes=50)
    bus.create_topics({"dlq": 1})
    fill(bus, "dlq", 100)
    late = drain(bus.consumer("late", ["dlq"]))
    assert 0 < sum(len(m.value) for m in late) <= 50
    assert late[-1].offset == 99


def test_seek_rewinds_a_consumer():
    bus = MemoryBus()
    bus.create_topics({"t": 1})
    fill(bus, "t", 5)
    consumer = bus.consumer("g", ["t"])
    drain(consumer)
    consumer.seek({("t", 0): 3})
    assert [m.offset for m in drain(consumer)] == [3, 4]


def _log_of(bus, topic):
    """Per partition: (log start, log end, [(offset, key, value)]), what a consumer can observe."""
    return [(p.start, p.end, [(m.offset, m.key, m.value) for m in p.records]) for p in bus._topics[topic]]


@pytest.mark.parametrize("retention_bytes", [0, 40, 1 << 20])
def test_produce_many_leaves_the_same_log_as_producing_one_by_one(retention_bytes):
    records = [("t", f"v{i}".encode(), None if i % 3 == 0 else f"k{i % 5}".encode()) for i in range(60)]
    logs = []
    for batched in (False, True):
        bus = MemoryBus(retention_bytes=retention_bytes)
        bus.create_topics({"t": 3})
        reader = bus.consumer("g", ["t"])
        reader.commit({("t", p): 4 for p in range(3)})  # retention may drop only what "g" committed
        producer = bus.producer()
        if batched:
            producer.produce_many(records[:25])
            producer.produce_many(records[25:])
        else:
            for topic, value, key in records:
                producer.produce(topic, value, key=key)
        logs.append(_log_of(bus, "t"))
    assert logs[0] == logs[1]
    assert sum(len(records) for _, _, records in logs[1]) < 60 or retention_bytes == 1 << 20


def test_produce_many_wakes_a_waiting_consumer():
    import threading
    import time

    bus = MemoryBus()
    bus.create_topics({"t": 1})
    consumer = bus.consumer("g", ["t"])
    got = []
    waiting = threading.Thread(target=lambda: got.extend(consumer.poll_batch(10, 600.0)), daemon=True)
    waiting.start()
    deadline = time.monotonic() + 60.0
    while not bus._lock._waiters and time.monotonic() < deadline:  # until the consumer waits on the bus
        time.sleep(0.001)
    assert bus._lock._waiters
    bus.producer().produce_many([("t", b"a", None), ("t", b"b", None)])
    waiting.join(60.0)  # woken by the produce: far sooner than its 600 s poll timeout
    assert not waiting.is_alive() and [m.value for m in got] == [b"a", b"b"]


def test_produce_many_refused_mid_batch_keeps_the_records_before():
    bus = MemoryBus(max_lag_bytes=10, retention_bytes=0)
    bus.create_topics({"t": 1})
    bus.consumer("slow", ["t"])
    with pytest.raises(BusFull) as refused:
        bus.producer().produce_many([("t", b"0123456789", None), ("t", b"x", None), ("t", b"y", None)])
    assert [m.value for m in bus._topics["t"][0].records] == [b"0123456789"]
    assert refused.value.appended == 1  # what a caller needs to tell the records on the log from the others
