"""An in-process log with Kafka's semantics, for embedded mode and tests.

Topics have partitions chosen by key hash; every record gets an offset; a
consumer group has committed offsets and shares a topic's partitions among
its members; records are bytes, never Python objects. Memory is bounded per
partition: like Kafka's ``retention.bytes``, the oldest records go once a
partition holds more than ``retention_bytes`` (but never one that a group
reading the topic has not committed yet), and a producer gets
:class:`BusFull` while unconsumed records would push a partition past
``retention_bytes + max_lag_bytes``.

With ``log_dir`` the bus survives its process (``driftline up``): every record is
appended to a file per partition, written through on ``flush`` (which ingest and
the runners call before answering or committing), and committed offsets with the
groups reading each topic go to ``offsets.json`` on every commit. A bus opened
on the same ``log_dir`` reloads both, so what ingest accepted but no runner had
processed yet is still there, and every group resumes at its committed offset.
On opening, records that every reading group has committed and retention lets
go are dropped and the files rewritten, so the log does not grow without bound
across restarts.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from driftline.bus.base import Bus, BusFull, Consumer, Message, Offsets, Producer, partition_for
from driftline.bus.copartition import check_co_partitioned


@dataclass
class _Partition:
    records: deque = field(default_factory=deque)  # Message, oldest first
    start: int = 0  # offset of records[0] (Kafka's log start offset)
    end: int = 0  # next offset to be written (Kafka's log end offset)
    retained_bytes: int = 0

    def append(self, message: Message) -> None:
        self.records.append(message)
        self.end += 1
        self.retained_bytes += len(message.value)

    def drop_before(self, offset: int) -> None:
        while self.records and self.start < offset:
            self.retained_bytes -= len(self.records.popleft().value)
            self.start += 1

    def read(self, offset: int, limit: int) -> list[Message]:
        first = max(offset, self.start) - self.start
        return [self.records[i] for i in range(first, min(first + limit, len(self.records)))]


#: One record on disk: offset, timestamp, key length (-1: no key), value length; then key and value.
_RECORD_HEADER = struct.Struct("<qqii")
OFFSETS_FILE = "offsets.json"


def _write_record(file, message: Message) -> None:
    key = message.key
    file.write(_RECORD_HEADER.pack(message.offset, message.timestamp_ms, -1 if key is None else len(key), len(message.value)))
    if key is not None:
        file.write(key)
    file.write(message.value)


def _read_records(path: Path, topic: str, partition: int) -> tuple[list[Message], bool]:
    """The records in a partition file, and whether the file held nothing else.

    A record cut short by a crash mid-write ends the list (it was never flushed, so
    never acknowledged to a producer nor committed by a consumer)."""
    data = path.read_bytes() if path.exists() else b""
    records, at = [], 0
    while at + _RECORD_HEADER.size <= len(data):
        offset, timestamp, key_len, value_len = _RECORD_HEADER.unpack_from(data, at)
        at += _RECORD_HEADER.size
        end = at + max(key_len, 0) + value_len
        if end > len(data):
            break
        key = None if key_len < 0 else data[at:at + key_len]
        records.append(Message(topic, partition, offset, key, data[at + max(key_len, 0):end], timestamp))
        at = end
    return records, at == len(data)


@dataclass
class _Group:
    committed: Offsets = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)


class MemoryBus(Bus):
    """The embedded bus.

    Parameters
    ----------
    max_lag_bytes
        Per partition, how many bytes the slowest group may lag before producers get
        :class:`BusFull`.
    retention_bytes
        Per partition, how many bytes of records are kept for groups that join later.

    Examples
    --------
    >>> bus = MemoryBus()
    >>> bus.create_topics({"t": 2})
    >>> producer = bus.producer()
    >>> for i in range(4):
    ...     producer.produce("t", f"v{i}".encode(), key=f"k{i}".encode())
    >>> consumer = bus.consumer("g", ["t"])
    >>> batch = consumer.poll_batch(10, 0.0)
    >>> sorted(m.value for m in batch)
    [b'v0', b'v1', b'v2', b'v3']
    >>> consumer.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
    >>> consumer.poll_batch(10, 0.0)
    []
    """

    def __init__(self, max_lag_bytes: int = 64 << 20, retention_bytes: int = 4 << 20, log_dir: Path | None = None):
        self.max_lag_bytes = max_lag_bytes
        self.retention_bytes = retention_bytes
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._topics: dict[str, list[_Partition]] = {}
        self._groups: dict[str, _Group] = {}
        self._readers: dict[str, set[str]] = {}  # topic -> groups that subscribed to it
        self._files: dict[tuple[str, int], object] = {}  # (topic, partition) -> open append-only file
        self._lock = threading.Condition()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._load_offsets()

    def create_topics(self, topics: dict[str, int]) -> None:
        with self._lock:
            for name, partitions in topics.items():
                if name in self._topics:
                    continue
                self._topics[name] = [_Partition() for _ in range(partitions)]
                if self.log_dir is not None:
                    for index in range(partitions):
                        self._open_log(name, index)

    # -- persistence (only with log_dir) ---------------------------------------------------

    def _log_path(self, topic: str, index: int) -> Path:
        return self.log_dir / f"{topic}-{index}.log"

    def _open_log(self, topic: str, index: int) -> None:
        """Reload a partition from its file, drop what retention lets go, rewrite the file compacted."""
        path = self._log_path(topic, index)
        partition = self._topics[topic][index]
        records, clean = _read_records(path, topic, index)
        if records:
            partition.start = partition.end = records[0].offset
            for message in records:
                partition.append(message)
        self._truncate(topic, index)
        if len(partition.records) != len(records) or not clean:
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                for message in partition.records:
                    _write_record(out, message)
            os.replace(tmp, path)
        self._files[(topic, index)] = open(path, "ab")

    def _load_offsets(self) -> None:
        path = self.log_dir / OFFSETS_FILE
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        for group, offsets in saved["committed"].items():
            self._groups[group] = _Group(committed={(t, int(p)): o for t, p, o in offsets})
        self._readers = {topic: set(groups) for topic, groups in saved["readers"].items()}

    def _save_offsets(self) -> None:
        """Committed offsets and readers, atomically (a crash leaves the old file or the new one)."""
        if self.log_dir is None:
            return
        saved = {"committed": {g: [[t, p, o] for (t, p), o in sorted(state.committed.items())]
                               for g, state in self._groups.items()},
                 "readers": {t: sorted(groups) for t, groups in self._readers.items()}}
        tmp = self.log_dir / (OFFSETS_FILE + ".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, self.log_dir / OFFSETS_FILE)

    def flush_logs(self) -> None:
        """Hand every appended record to the operating system (survives the process, not a power cut)."""
        with self._lock:
            for file in self._files.values():
                file.flush()

    def close(self) -> None:
        """Flush and close the partition files (the in-memory log stays readable)."""
        with self._lock:
            for file in self._files.values():
                file.close()
            self._files.clear()
            self._save_offsets()

    def producer(self) -> Producer:
        return MemoryProducer(self)

    def consumer(self, group: str, topics: list[str]) -> MemoryConsumer:
        return MemoryConsumer(self, group, topics)

    # -- used by producers and consumers, always under the lock ---------------------------

    def _partitions(self, topic: str) -> list[_Partition]:
        try:
            return self._topics[topic]
        except KeyError:
            raise KeyError(f"unknown topic {topic!r}; create it first") from None

    def _append_many(self, records: list[tuple[str, bytes | None, bytes]], producer: MemoryProducer) -> None:
        """Append ``(topic, key, value)`` records in order, keyless ones round robin over the
        producer's counter; a :class:`BusFull` is raised with the records before it on the log,
        as if produced one by one.

        Retention is applied once per touched partition at the end, not after every record: the
        committed offsets cannot move while the lock is held, so dropping the oldest records down
        to ``retention_bytes`` once drops exactly what a drop after every append would have."""
        limit = self.retention_bytes + self.max_lag_bytes
        timestamp = int(time.time() * 1000)  # one clock read per call: records of a batch share it
        touched: set[tuple[str, int]] = set()
        files = self._files
        appended = 0
        try:
            for topic, key, value in records:
                partitions = self._partitions(topic)
                producer._round_robin += 1
                index = partition_for(key, len(partitions), producer._round_robin)
                partition = partitions[index]
                if partition.retained_bytes >= limit:
                    self._truncate(topic, index)  # groups may have committed since the last append
                    if partition.retained_bytes >= limit:
                        raise BusFull(f"topic {topic!r} partition {index}: consumers lag by about "
                                      f"{partition.retained_bytes - self.retention_bytes} bytes")
                message = Message(topic, index, partition.end, key, bytes(value), timestamp)
                partition.append(message)
                if files:
                    file = files.get((topic, index))
                    if file is not None:
                        _write_record(file, message)
                touched.add((topic, index))
                appended += 1
        except BusFull as exc:
            exc.appended = appended  # how many of the records are on the log
            exc.topic = topic
            raise
        finally:
            for topic, index in touched:
                if self._topics[topic][index].retained_bytes > self.retention_bytes:
                    self._truncate(topic, index)

    def _truncate(self, topic: str, index: int) -> None:
        """Drop the oldest records beyond ``retention_bytes`` that every reading group has committed."""
        partition = self._partitions(topic)[index]
        readers = self._readers.get(topic)
        floor = min(self._groups[g].committed.get((topic, index), 0) for g in readers) if readers else partition.end
        while partition.records and partition.start < floor and partition.retained_bytes > self.retention_bytes:
            partition.drop_before(partition.start + 1)

    def _assign(self, group: _Group) -> None:
        """Share each subscribed topic's partitions among its members in contiguous ranges, as
        Kafka's range assignor: members in the order they joined, the first ones taking one more
        when the count does not divide. Members that read the same co-partitioned topics get the
        same partition numbers of each, so a join by key stays within one member."""
        for member in group.members:
            member._assignment = []
        for topic in sorted({t for m in group.members for t in m.topics}):
            readers = [m for m in group.members if topic in m.topics]
            count = len(self._partitions(topic))
            share, extra = divmod(count, len(readers))
            start = 0
            for n, member in enumerate(readers):
                size = share + (1 if n < extra else 0)
                member._assignment.extend((topic, i) for i in range(start, start + size))
                start += size
        for member in group.members:
            member._positions = {tp: group.committed.get(tp, 0) for tp in member._assignment}

    def group_members(self, group: str) -> list[str]:
        """The ids of the consumers in ``group`` right now (empty: nobody in it)."""
        with self._lock:
            state = self._groups.get(group)
            return [] if state is None else [m.member_id() for m in state.members]


class MemoryProducer(Producer):
    def __init__(self, bus: MemoryBus):
        self._bus = bus
        self._round_robin = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.produce_many([(topic, value, key)])

    def produce_many(self, records: list[tuple[str, bytes, bytes | None]]) -> None:
        """``produce`` for each ``(topic, value, key)`` in order, under one lock and one wake-up
        of waiting consumers (a batch's records are on the log together when this returns).

        Raises
        ------
        BusFull
            As ``produce``: the records before the one refused are on the log, as many as
            the exception's ``appended`` says.
        """
        if not records:
            return
        bus = self._bus
        with bus._lock:
            try:
                bus._append_many([(t, k, v) for t, v, k in records], self)
            finally:
                bus._lock.notify_all()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Records are on the log as soon as ``produce`` returns; a persistent bus writes its files through."""
        if self._bus.log_dir is not None:
            self._bus.flush_logs()

    def room(self, topic: str, share: float = 1.0) -> bool:
        """Whether every partition of ``topic`` is below ``share`` of the backpressure limit."""
        bus = self._bus
        with bus._lock:
            partitions = bus._partitions(topic)
            for index in range(len(partitions)):
                bus._truncate(topic, index)
            limit = share * (bus.retention_bytes + bus.max_lag_bytes)
            return all(p.retained_bytes < limit for p in partitions)


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, group: str, topics: list[str]):
        self._bus = bus
        self.group = group
        self.topics = list(topics)
        self._assignment: list[tuple[str, int]] = []
        self._positions: Offsets = {}
        self._next = 0
        with bus._lock:
            if len(topics) > 1:
                check_co_partitioned(group, {topic: len(bus._partitions(topic)) for topic in topics})
            for topic in topics:
                bus._partitions(topic)
                bus._readers.setdefault(topic, set()).add(group)
            bus._save_offsets()
            state = bus._groups.setdefault(group, _Group())
            state.members.append(self)
            bus._assign(state)

    def member_id(self) -> str:
        return f"{self.group}-{id(self):x}"

    def assigned(self) -> set[tuple[str, int]]:
        with self._bus._lock:
            return set(self._assignment)

    def poll_batch(self, max_records: int, timeout_s: float, linger_s: float = 0.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        lock = self._bus._lock
        with lock:
            batch = self._read(max_records)
            while not batch:  # idle: sleep on the condition (producers notify) until the timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return batch
                lock.wait(remaining)
                batch = self._read(max_records)
            if linger_s <= 0 or timeout_s <= 0:
                return batch
            flush_at = time.monotonic() + linger_s  # the first record is here: fill up or linger out
            positions = self._positions
            while len(batch) < max_records:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                lock.wait(remaining)
                if self._positions is not positions:
                    break  # the group rebalanced meanwhile: positions went back to its commits
                batch.extend(self._read(max_records - len(batch)))
            return batch

    def _read(self, max_records: int) -> list[Message]:
        batch: list[Message] = []
        assignment = self._assignment
        # Start at a different partition each poll so no partition starves.
        for k in range(len(assignment)):
            tp = assignment[(self._next + k) % len(assignment)]
            partition = self._bus._partitions(tp[0])[tp[1]]
            records = partition.read(self._positions[tp], max_records - len(batch))
            if records:
                batch.extend(records)
                self._positions[tp] = records[-1].offset + 1
            if len(batch) >= max_records:
                break
        self._next += 1
        return batch

    def commit(self, offsets: Offsets) -> None:
        with self._bus._lock:
            committed = self._bus._groups[self.group].committed
            for tp, offset in offsets.items():
                committed[tp] = max(committed.get(tp, 0), offset)
            self._bus._save_offsets()
            self._bus._lock.notify_all()

    def positions(self) -> Offsets:
        with self._bus._lock:
            return dict(self._positions)

    def seek(self, offsets: Offsets) -> None:
        with self._bus._lock:
            for tp, offset in offsets.items():
                if tp in self._positions:
                    self._positions[tp] = offset

    def lag(self) -> Offsets:
        with self._bus._lock:
            committed = self._bus._groups[self.group].committed
            return {tp: self._bus._partitions(tp[0])[tp[1]].end - committed.get(tp, 0) for tp in self._assignment}

    def close(self) -> None:
        with self._bus._lock:
            group = self._bus._groups[self.group]
            if self in group.members:
                group.members.remove(self)
                if group.members:
                    self._bus._assign(group)
