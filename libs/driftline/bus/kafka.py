"""The bus over a real Kafka cluster, with confluent-kafka.

Producers are idempotent with ``acks=all``; consumers never auto-commit: the
runner commits after its checkpoint. Partitioning uses librdkafka's
``consistent`` (CRC32) partitioner, the same function as the in-process bus.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as _Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.bus.base import Bus, BusFull, Consumer, Message, Offsets, Producer


class KafkaBus(Bus):
    """
    Parameters
    ----------
    bootstrap
        ``host:port[,host:port]``.
    replication_factor
        For topics driftline creates; 1 on a single-broker laptop cluster.
    extra
        More librdkafka settings for every client (security, timeouts).
    """

    def __init__(self, bootstrap: str, replication_factor: int = 1, extra: dict | None = None):
        self.config = {"bootstrap.servers": bootstrap, **(extra or {})}
        self.replication_factor = replication_factor

    def create_topics(self, topics: dict[str, int], timeout_s: float = 30.0) -> None:
        admin = AdminClient(self.config)
        existing = set(admin.list_topics(timeout=timeout_s).topics)
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


class KafkaProducer(Producer):
    def __init__(self, config: dict):
        self._producer = _Producer({
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "consistent",
            "linger.ms": 5,
            "compression.type": "lz4",
        })
        self._errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, value: bytes, key: bytes | None = None, block_s: float = 30.0) -> None:
        deadline = time.monotonic() + block_s
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                self._producer.poll(0)
                return
            except BufferError as exc:
                # librdkafka's local queue is full: serve delivery reports until there is room.
                if time.monotonic() > deadline:
                    raise BusFull(f"producer queue full for {block_s}s on {topic!r}") from exc
                self._producer.poll(0.1)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} records not acknowledged after {timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{len(errors)} records failed: {errors[:3]}")


class KafkaConsumer(Consumer):
    def __init__(self, config: dict, group: str, topics: list[str]):
        self._consumer = _Consumer({
            **config,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        })
        self._pending_seeks: Offsets = {}
        self._consumer.subscribe(topics, on_assign=self._on_assign)

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            # A restored state's offsets apply once; later rebalances resume from commits.
            offset = self._pending_seeks.pop((tp.topic, tp.partition), None)
            if offset is not None:
                tp.offset = offset
        consumer.incremental_assign(partitions)

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        batch = []
        for m in self._consumer.consume(max_records, timeout_s):
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            _, ts = m.timestamp()
            batch.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", ts))
        return batch

    def commit(self, offsets: Offsets) -> None:
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)

    def positions(self) -> Offsets:
        assigned = self._consumer.assignment()
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assigned) if tp.offset >= 0}

    def seek(self, offsets: Offsets) -> None:
        self._pending_seeks.update(offsets)
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def close(self) -> None:
        self._consumer.close()
