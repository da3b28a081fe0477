"""The bus interface every service is written against.

Two implementations share it: :mod:`driftline.bus.memory` (embedded mode, an
in-process log) and :mod:`driftline.bus.kafka` (confluent-kafka). Only bytes
travel on either: records are encoded by :class:`driftline.codec.Codec`
before they are produced.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

#: (topic, partition) -> the next offset to read, Kafka's meaning of a committed offset.
Offsets = dict[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


class BusFull(BufferError):
    """The bus cannot take more records until consumers catch up (backpressure)."""


def partition_for(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """CRC32 of the key, as librdkafka's ``consistent`` partitioner, so both buses agree."""
    if key is None:
        return fallback % partitions
    return zlib.crc32(key) % partitions


def next_offsets(messages: list[Message]) -> Offsets:
    """The offsets to commit after ``messages``: one past the last one seen per partition."""
    offsets: Offsets = {}
    for message in messages:
        tp = (message.topic, message.partition)
        offsets[tp] = max(offsets.get(tp, 0), message.offset + 1)
    return offsets


class Producer(ABC):
    @abstractmethod
    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Queue one record; raises :class:`BusFull` when backpressure applies."""

    @abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued record is durably on the bus, or raise."""

    def mark(self) -> Any:
        """A mark after every record produced so far, for :meth:`acknowledged`.

        This default flushes, so every mark is acknowledged when it is made; a producer
        whose broker acknowledges asynchronously (Kafka) lets the caller go on meanwhile.
        """
        self.flush()
        return None

    def acknowledged(self, mark: Any) -> bool:
        """Whether every record produced before ``mark`` is durably on the bus, without waiting.

        Raises as :meth:`flush` when a delivery failed.
        """
        return True


class Consumer(ABC):
    @abstractmethod
    def poll_batch(self, max_records: int, timeout_s: float, linger_s: float = 0.0) -> list[Message]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first.

        Once a record is there, the poll returns as soon as ``max_records`` are, or
        ``linger_s`` after the first one arrived, whichever comes first: a micro-batch
        flushed by size or by a short linger, so a quiet stream answers within the
        linger and a busy one still gets full batches. ``linger_s=0`` hands out what
        has arrived so far; a poll with ``timeout_s=0`` never waits, nor lingers.
        """

    @abstractmethod
    def commit(self, offsets: Offsets) -> None:
        """Commit offsets synchronously (next offset to read per partition)."""

    def commit_soon(self, offsets: Offsets) -> None:
        """Commit offsets without waiting for the answer: one that fails is covered by the
        next commit, or its records are read again (this default commits synchronously)."""
        self.commit(offsets)

    @abstractmethod
    def positions(self) -> Offsets:
        """The next offset this consumer will read, per assigned partition."""

    @abstractmethod
    def seek(self, offsets: Offsets) -> None:
        """Read from ``offsets`` next (for partitions in ``offsets`` that are assigned here)."""

    def assigned(self) -> set[tuple[str, int]] | None:
        """The (topic, partition)s this consumer holds now (None: a bus that cannot tell)."""
        return None

    def lag(self) -> Offsets:
        """Per assigned partition, records not committed yet: high watermark minus committed
        offset (for metrics; a bus that cannot tell returns nothing)."""
        return {}

    @abstractmethod
    def close(self) -> None: ...


class Bus(ABC):
    @abstractmethod
    def create_topics(self, topics: dict[str, int]) -> None:
        """Create missing topics with the given partition counts (idempotent)."""

    @abstractmethod
    def producer(self) -> Producer: ...

    @abstractmethod
    def consumer(self, group: str, topics: list[str]) -> Consumer: ...

    def close(self) -> None:
        pass
