"""The bus over a real Kafka cluster, with confluent-kafka.

Producers are idempotent with ``acks=all``; consumers never auto-commit: the
runner commits after its checkpoint. Partitioning uses librdkafka's
``consistent`` (CRC32) partitioner, the same function as the in-process bus.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as _Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.bus.base import Bus, BusFull, Consumer, Message, Offsets, Producer
from driftline.bus.copartition import check_co_partitioned
from driftline.bus.group_members import group_members as _group_members
from driftline.failure import DependencyUnavailable, is_transient

log = logging.getLogger(__name__)

#: A commit refused because the group moved on without this member (a rebalance, or a batch
#: that took longer than max.poll.interval.ms). Not a failure of the data: whoever owns the
#: partitions now reads them from the last commit, so the batch is replayed (at-least-once).
_GROUP_MOVED_ON = {
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST, KafkaError.STALE_MEMBER_EPOCH, KafkaError.FENCED_MEMBER_EPOCH,
}


class KafkaBus(Bus):
    """
    Parameters
    ----------
    bootstrap
        ``host:port[,host:port]``.
    replication_factor
        For topics driftline creates; 1 on a single-broker laptop cluster.
    extra
        More librdkafka settings for every client (security, timeouts). They win over
        driftline's defaults, except the ones its delivery guarantees rest on
        (idempotence, ``acks``, manual commits), which cannot be turned off here.
    """

    def __init__(self, bootstrap: str, replication_factor: int = 1, extra: dict | None = None):
        self.config = {"bootstrap.servers": bootstrap, **(extra or {})}
        self.replication_factor = replication_factor

    def create_topics(self, topics: dict[str, int], timeout_s: float = 30.0) -> None:
        """Create the missing topics; topics that exist are left as they are (a user's own may
        have more partitions). Groups that join topics check them when they start
        (:func:`driftline.bus.copartition.check_co_partitioned`)."""
        admin = AdminClient(self.config)
        metadata = admin.list_topics(timeout=timeout_s).topics
        existing = set(metadata)
        differ = {t: len(metadata[t].partitions) for t, n in topics.items() if t in metadata and len(metadata[t].partitions) != n}
        if differ:
            log.warning("kafka: existing topics keep their partition counts %s (driftline would create %s)",
                        differ, {t: topics[t] for t in differ})
        wanted = [NewTopic(t, num_partitions=n, replication_factor=self.replication_factor)
                  for t, n in topics.items() if t not in existing]
        for topic, future in admin.create_topics(wanted, operation_timeout=timeout_s).items() if wanted else []:
            try:
                future.result(timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self.config)

    def consumer(self, group: str, topics: list[str]) -> KafkaConsumer:
        return KafkaConsumer(self.config, group, topics)

    def reader(self, topics: list[str]) -> KafkaReader:
        """Every partition of ``topics`` from the beginning, in no group (control topics)."""
        return KafkaReader(self.config, topics)

    def group_members(self, group: str, timeout_s: float = 10.0) -> list[str]:
        """The member ids of ``group`` as the broker's coordinator sees them (empty: nobody in it).

        A member that died without leaving stays listed until its session times out. Asked
        from a child process (:mod:`driftline.bus.group_members`): librdkafka's admin client
        can abort its process when a broker disconnects mid-request."""
        return _group_members(self.config, group, timeout_s)


class _Segment:
    """The records produced between two marks, counted down as the broker acknowledges them.

    A failed delivery stays with its segment (the producer's shared list, which a flush
    empties, is for whoever flushes): the segment is never acknowledged after it.
    """

    __slots__ = ("unacknowledged", "failures", "_errors")

    def __init__(self, errors: list[tuple[str, KafkaError]]):
        self.unacknowledged = 0
        self.failures: list[tuple[str, KafkaError]] = []
        self._errors = errors

    def delivered(self, err, msg) -> None:
        self.unacknowledged -= 1
        if err is not None:
            self.failures.append((msg.topic(), err))
            self._errors.append((msg.topic(), err))


class KafkaProducer(Producer):
    #: Defaults a deployment may tune through ``extra``.
    DEFAULTS = {"partitioner": "consistent", "linger.ms": 5, "compression.type": "lz4"}
    #: What checkpoint step 2 relies on: no duplicates, no loss, per-partition order.
    REQUIRED = {"enable.idempotence": True, "acks": "all"}

    def __init__(self, config: dict):
        self._producer = _Producer({**self.DEFAULTS, **config, **self.REQUIRED})
        self._errors: list[tuple[str, KafkaError]] = []
        self._segment = _Segment(self._errors)

    def produce(self, topic: str, value: bytes, key: bytes | None = None, block_s: float = 30.0) -> None:
        deadline = time.monotonic() + block_s
        segment = self._segment
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=segment.delivered)
                segment.unacknowledged += 1
                self._producer.poll(0)
                return
            except BufferError as exc:
                # librdkafka's local queue is full: serve delivery reports until there is room.
                if time.monotonic() > deadline:
                    raise BusFull(f"producer queue full for {block_s}s on {topic!r}") from exc
                self._producer.poll(0.1)

    def mark(self) -> _Segment:
        """The records produced since the last mark; acknowledged once the broker has them all."""
        mark, self._segment = self._segment, _Segment(self._errors)
        return mark

    def acknowledged(self, mark: _Segment) -> bool:
        self._producer.poll(0)  # serve the delivery reports that arrived
        if mark.failures:
            raise _delivery_failure(mark.failures)
        return mark.unacknowledged == 0

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record's acknowledgement.

        Raises
        ------
        DependencyUnavailable
            The broker did not acknowledge in time, or delivery failed for a transport reason
            (broker down, timed out): whoever flushes retries; nothing is the records' fault.
        KafkaException
            A delivery failed for a reason of the record or the configuration (too large,
            not authorized): retrying would not help.
        """
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DependencyUnavailable(f"broker: {remaining} records not acknowledged after {timeout_s}s")
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._errors:
            errors = list(self._errors)
            self._errors.clear()  # in place: the open segments report into this list
            raise _delivery_failure(errors)


def _delivery_failure(errors: list[tuple[str, KafkaError]]) -> Exception:
    """A transport failure (broker down, timed out) is transient: the records may be sent again;
    one of the records or the configuration (too large, not authorized) is not."""
    described = [f"{topic}: {err}" for topic, err in errors[:3]]
    if all(is_transient(KafkaException(err)) for _, err in errors):
        return DependencyUnavailable(f"broker: {len(errors)} records not delivered: {described}")
    return KafkaException(f"{len(errors)} records failed: {described}")


class _LibrdkafkaConsumer(Consumer):
    """What a group consumer and a group-less reader share: polling a librdkafka consumer,
    its positions and seeks."""

    def __init__(self, consumer: _Consumer):
        self._consumer = consumer
        self._pending_seeks: Offsets = {}

    def poll_batch(self, max_records: int, timeout_s: float, linger_s: float = 0.0) -> list[Message]:
        # Wait (at most timeout_s) for the first record only, then for the rest of the batch at
        # most linger_s: librdkafka's consume(n, t) returns once n records are there or t has
        # passed, which is exactly a flush by size or by linger. consume(n, timeout_s) alone
        # would hold a quiet stream's records for the whole poll timeout, latency for nothing.
        messages = self._consumer.consume(1, timeout_s)
        if messages and max_records > 1:
            messages += self._consumer.consume(max_records - 1, linger_s if timeout_s > 0 else 0)
        batch = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                # Informational (a broker restarting, max.poll.interval.ms exceeded, ...):
                # librdkafka recovers on its own, rejoining the group on this very poll.
                log.warning("kafka consumer: %s", error)
                continue
            _, ts = m.timestamp()
            batch.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", ts))
        return batch

    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition)s this consumer holds right now."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def positions(self) -> Offsets:
        assigned = self._consumer.assignment()
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assigned) if tp.offset >= 0}

    def seek(self, offsets: Offsets) -> None:
        """Seek the assigned partitions now, the others when they are assigned (once)."""
        assigned = self.assigned()
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in assigned:
                self._pending_seeks.pop((topic, partition), None)
                self._consumer.seek(TopicPartition(topic, partition, offset))
            else:
                self._pending_seeks[(topic, partition)] = offset

    def close(self) -> None:
        self._consumer.close()


class KafkaConsumer(_LibrdkafkaConsumer):
    #: Defaults a deployment may tune through ``extra``. A consumer that dies without
    #: leaving its group (SIGKILL, a lost node) holds its partitions until its session
    #: times out: 10 s here rather than librdkafka's 45 s, so a restart resumes quickly.
    DEFAULTS = {
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
    }
    #: The runner commits after its checkpoint, never librdkafka on its own.
    REQUIRED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
    #: A group that reads several topics joins them by key (the label-joiner: predictions and
    #: labels by event id), so partition i of every topic must go to the same member. The range
    #: assignor does that over co-partitioned topics; a sticky one balances topic-partitions
    #: freely and can give all of predictions to one instance and all of labels to another.
    JOINING = {"partition.assignment.strategy": "range"}

    def __init__(self, config: dict, group: str, topics: list[str], timeout_s: float = 30.0):
        joining = self.JOINING if len(topics) > 1 else {}
        settings = {**self.DEFAULTS, **config, "group.id": group, **joining, **self.REQUIRED}
        self._eager = settings["partition.assignment.strategy"] in ("range", "roundrobin")
        super().__init__(_Consumer(settings))
        if joining:
            try:
                metadata = self._consumer.list_topics(timeout=timeout_s).topics
                check_co_partitioned(group, {t: len(metadata[t].partitions) for t in topics if t in metadata})
            except Exception:
                self._consumer.close()
                raise
        self._before_revoke: Callable[[], None] | None = None
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def before_revoke(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` while partitions are still ours, before a rebalance takes them away:
        the last chance to commit what was done with them (their next owner starts there)."""
        self._before_revoke = callback

    def _on_revoke(self, consumer, partitions: list[TopicPartition]) -> None:
        # confluent-kafka unassigns them after this returns, as it would without a callback.
        if self._before_revoke is not None:
            self._before_revoke()

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            # A restored state's offsets apply once; later rebalances resume from commits.
            offset = self._pending_seeks.pop((tp.topic, tp.partition), None)
            if offset is not None:
                tp.offset = offset
        if self._eager:  # an eager (range) rebalance hands over the whole assignment each time
            consumer.assign(partitions)
        else:
            consumer.incremental_assign(partitions)

    def commit(self, offsets: Offsets) -> bool:
        """Commit synchronously; False when the group moved on and the records will be replayed.

        Only partitions still assigned here are committed: one that a rebalance moved away
        is its new owner's to commit.
        """
        mine = self._still_assigned(offsets)
        if not mine:
            return not offsets
        try:
            self._consumer.commit(offsets=mine, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _GROUP_MOVED_ON:
                raise
            log.warning("kafka consumer: commit refused (%s); those records will be delivered again", exc.args[0])
            return False
        return len(mine) == len(offsets)

    def commit_soon(self, offsets: Offsets) -> None:
        mine = self._still_assigned(offsets)
        if mine:
            self._consumer.commit(offsets=mine, asynchronous=True)

    def _still_assigned(self, offsets: Offsets) -> list[TopicPartition]:
        """The offsets of partitions still assigned here: one a rebalance moved away is its new
        owner's to commit."""
        assigned = self.assigned()
        return [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in assigned]

    def member_id(self) -> str | None:
        """This consumer's id in its group, once it has joined (None before)."""
        return self._consumer.memberid() or None

    def lag(self, timeout_s: float = 2.0) -> Offsets:
        """High watermark minus committed offset per assigned partition: one request for the
        commits and one per partition for its watermark, so callers do not ask every batch.
        A partition with no commit yet counts from its low watermark (``auto.offset.reset``
        is ``earliest``)."""
        lags: Offsets = {}
        assigned = self._consumer.assignment()
        if not assigned:
            return lags
        for tp in self._consumer.committed(assigned, timeout=timeout_s):
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            lags[(tp.topic, tp.partition)] = max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lags


class KafkaReader(_LibrdkafkaConsumer):
    """Reads every partition of its topics from the beginning, outside any consumer group.

    For control topics (model events), which every instance reads whole. A group would add
    nothing but a coordinator to depend on, and a broker restart can leave a group consumer
    stuck: one whose session was lost must be polled before a commit succeeds, and one whose
    committed-offset fetch failed while it joined may never get a position (both seen in CI).
    Without a group there is no join, no offset fetch and nothing to commit. The partitions
    are those the topics have when the reader starts (driftline creates its topics first).
    """

    def __init__(self, config: dict, topics: list[str], timeout_s: float = 30.0):
        settings = {**KafkaConsumer.DEFAULTS, **config, "group.id": f"driftline-reader-{uuid.uuid4().hex[:8]}",
                    **KafkaConsumer.REQUIRED}
        super().__init__(_Consumer(settings))
        try:
            metadata = self._consumer.list_topics(timeout=timeout_s).topics
        except Exception:
            self._consumer.close()
            raise
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)
                               for topic in topics if topic in metadata
                               for partition in sorted(metadata[topic].partitions)])

    def commit(self, offsets: Offsets) -> bool:
        """Nothing to commit outside a group: a restarted reader reads the topics again."""
        return True
