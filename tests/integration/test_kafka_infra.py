"""Proof that the local Kafka broker and Apicurio registry behave like the real thing.

These tests pin the assumptions the rest of driftline builds on: idempotent
produce + manual-commit consume through a multi-partition topic, and Avro in the
Confluent wire format through Apicurio's ccompat API with confluent-kafka's own
schema-registry client.
"""

from __future__ import annotations

import json
import struct
import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from driftline.testing import kafka as infra

# What driftline's producers pass to AvroSerializer. confluent-kafka >= 2.13 defaults to
# the "associated" subject strategy, which first asks the registry
# GET /associations/resources/... (a Confluent-only endpoint). Apicurio answers 404 and
# the client then falls back to TOPIC, so the default happens to work; naming TOPIC
# explicitly skips that extra request and does not depend on the 404 fallback.
SERIALIZER_CONF = {"subject.name.strategy.type": "TOPIC"}

EVENT_SCHEMA = json.dumps({
    "type": "record",
    "name": "InfraProbe",
    "namespace": "driftline.test",
    "fields": [
        {"name": "seq", "type": "long"},
        {"name": "feature", "type": "double"},
        {"name": "label", "type": ["null", "string"], "default": None},
    ],
})


def _create_topic(bootstrap: str, partitions: int) -> str:
    """A fresh topic per test (auto-creation is off on the test broker)."""
    topic = f"infra-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(timeout=30)
    return topic


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> tuple[list, Consumer]:
    """Read ``expected`` messages, committing each batch synchronously; return them and the open consumer."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"infra-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=500, timeout=1.0)
        for msg in batch:
            if msg.error():
                raise KafkaException(msg.error())
        received.extend(batch)
        if batch:
            consumer.commit(asynchronous=False)
    return received, consumer


def test_produce_and_consume_1000_messages(kafka_bootstrap: str) -> None:
    topic = _create_topic(kafka_bootstrap, partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    for i in range(1000):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                         on_delivery=lambda err, _msg: err and errors.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still in flight after 30s"
    assert errors == []

    received, consumer = _consume(kafka_bootstrap, topic, expected=1000)
    try:
        assert len(received) == 1000
        pairs = {(m.key().decode(), m.value().decode()) for m in received}
        assert pairs == {(f"k{i}", f"v{i}") for i in range(1000)}
        assert {m.partition() for m in received} == {0, 1, 2}
        for partition in range(3):  # per-partition order is what idempotence guarantees
            seqs = [int(m.value()[1:]) for m in received if m.partition() == partition]
            assert seqs == sorted(seqs)

        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed) == 1000
    finally:
        consumer.close()


def test_avro_roundtrip_through_apicurio_ccompat(kafka_bootstrap: str, schema_registry_url: str) -> None:
    topic = _create_topic(kafka_bootstrap, partitions=1)
    registry = SchemaRegistryClient({"url": schema_registry_url})
    serializer = AvroSerializer(registry, EVENT_SCHEMA, conf=SERIALIZER_CONF)
    deserializer = AvroDeserializer(registry)
    records = [{"seq": i, "feature": i / 7, "label": None if i % 2 else f"y{i}"} for i in range(20)]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for record in records:
        ctx = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, value=serializer(record, ctx))
    assert producer.flush(30) == 0

    received, consumer = _consume(kafka_bootstrap, topic, expected=len(records))
    consumer.close()
    assert len(received) == len(records)

    schema_id = registry.get_latest_version(f"{topic}-value").schema_id
    for msg, record in zip(received, records):
        raw = msg.value()
        magic, wire_id = struct.unpack(">bI", raw[:5])  # Confluent wire format header
        assert (magic, wire_id) == (0, schema_id)
        assert deserializer(raw, SerializationContext(topic, MessageField.VALUE)) == record

    # Re-registering the same schema, from a client with an empty cache, yields the same id.
    fresh = SchemaRegistryClient({"url": schema_registry_url})
    assert fresh.register_schema(f"{topic}-value", Schema(EVENT_SCHEMA, "AVRO")) == schema_id
    assert json.loads(fresh.get_schema(schema_id).schema_str)["name"] == "InfraProbe"


def test_default_serializer_conf_also_works_against_apicurio(schema_registry_url: str) -> None:
    """Documents why the default (associated) strategy is harmless: Apicurio 404s the lookup."""
    probe = httpx.get(f"{schema_registry_url}/associations/resources/-/some-topic", timeout=5)
    assert probe.status_code == 404
    registry = SchemaRegistryClient({"url": schema_registry_url})
    topic = f"infra-default-{uuid.uuid4().hex[:8]}"
    payload = AvroSerializer(registry, EVENT_SCHEMA)({"seq": 1, "feature": 0.5, "label": None},
                                                     SerializationContext(topic, MessageField.VALUE))
    assert payload[0] == 0
    assert registry.get_latest_version(f"{topic}-value").schema_id == struct.unpack(">I", payload[1:5])[0]


def test_missing_maven_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mvn on PATH the error names mvn and how to get it (the fixtures show this message)."""
    monkeypatch.setenv("PATH", "/nonexistent")
    infra.require_mvn.cache_clear()
    try:
        with pytest.raises(infra.InfraError, match=r"`mvn` not found on PATH.*apt-get install maven"):
            infra.require_mvn()
    finally:
        infra.require_mvn.cache_clear()


def test_failed_command_is_quoted_in_the_error(tmp_path) -> None:
    """A failing fetch command is named verbatim with the tail of its output."""
    with pytest.raises(infra.InfraError, match=r"fetching X failed \(exit 3\): sh -c 'echo boom; exit 3'\nboom"):
        infra.run_command(["sh", "-c", "echo boom; exit 3"], "fetching X", timeout=10)
