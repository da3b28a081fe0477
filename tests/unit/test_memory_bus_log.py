"""The memory bus with ``log_dir``: what was produced and committed survives the process."""

from __future__ import annotations

from driftline.bus import next_offsets
from driftline.bus.memory import MemoryBus


def _bus(tmp_path, **kwargs) -> MemoryBus:
    bus = MemoryBus(log_dir=tmp_path / "bus", **kwargs)
    bus.create_topics({"t": 2})
    return bus


def test_a_reopened_bus_resumes_every_group_at_its_committed_offset(tmp_path):
    bus = _bus(tmp_path)
    producer = bus.producer()
    for i in range(40):
        producer.produce("t", f"v{i:02d}".encode(), key=f"k{i}".encode())
    producer.flush()
    consumer = bus.consumer("g", ["t"])
    first = consumer.poll_batch(15, 0.0)
    consumer.commit(next_offsets(first))
    consumer.poll_batch(10, 0.0)  # read but never committed: must come again
    bus.close()

    again = _bus(tmp_path)
    rest = again.consumer("g", ["t"]).poll_batch(100, 0.0)
    assert sorted(m.value for m in first + rest) == [f"v{i:02d}".encode() for i in range(40)]
    assert not {(m.partition, m.offset) for m in first} & {(m.partition, m.offset) for m in rest}
    # New records continue the offsets of the old log.
    again.producer().produce("t", b"new", key=b"k0")
    newest = again.consumer("g2", ["t"]).poll_batch(100, 0.0)
    new = [m for m in newest if m.value == b"new"]
    assert len(new) == 1 and new[0].offset == max(m.offset for m in newest if m.partition == new[0].partition)


def test_records_every_group_committed_are_compacted_away_on_reopening(tmp_path):
    bus = _bus(tmp_path, retention_bytes=64)
    producer = bus.producer()
    for i in range(200):
        producer.produce("t", b"x" * 16, key=f"k{i}".encode())
    producer.flush()
    consumer = bus.consumer("g", ["t"])
    while batch := consumer.poll_batch(50, 0.0):
        consumer.commit(next_offsets(batch))
    bus.close()
    sizes_before = sum(p.stat().st_size for p in (tmp_path / "bus").glob("t-*.log"))

    again = _bus(tmp_path, retention_bytes=64)
    sizes_after = sum(p.stat().st_size for p in (tmp_path / "bus").glob("t-*.log"))
    assert sizes_after < sizes_before / 10
    assert again.consumer("g", ["t"]).poll_batch(100, 0.0) == []  # nothing committed comes back
    again.producer().produce("t", b"after", key=b"k1")
    assert [m.value for m in again.consumer("g", ["t"]).poll_batch(100, 0.0)] == [b"after"]


def test_a_record_cut_short_by_a_crash_is_ignored(tmp_path):
    bus = _bus(tmp_path)
    producer = bus.producer()
    for i in range(5):
        producer.produce("t", f"v{i}".encode(), key=b"same")  # one partition
    producer.flush()
    bus.close()
    log = next(p for p in (tmp_path / "bus").glob("t-*.log") if p.stat().st_size)
    log.write_bytes(log.read_bytes()[:-2])  # the last record half-written

    again = _bus(tmp_path)
    assert [m.value for m in again.consumer("g", ["t"]).poll_batch(100, 0.0)] == [b"v0", b"v1", b"v2", b"v3"]
    # The torn tail is cut off, so what is appended next reads back whole.
    again.producer().produce("t", b"v4-again", key=b"same")
    again.close()
    third = _bus(tmp_path)
    assert [m.value for m in third.consumer("g2", ["t"]).poll_batch(100, 0.0)][-1] == b"v4-again"
