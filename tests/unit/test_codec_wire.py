"""The fast codec writes what confluent-kafka's own AvroSerializer writes, byte for byte, and
reads times as epoch-ms ints; outside Confluent consumers must not notice the change."""

from datetime import datetime, timezone

import pytest
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from driftline.codec import Codec, SchemaViolation, registry_client, schema_text, without_logical_types
from driftline.failure import DependencyUnavailable
from driftline.timeutil import to_ms
from driftline.topics import ALL_TOPICS, RECORD_OF_TOPIC
from driftline.testing.samples import SAMPLES

TIME_FIELDS = {  # the timestamp-millis fields of each sample that carry a time
    topic: [f["name"] for f in __import__("json").loads(schema_text(RECORD_OF_TOPIC[topic]))["fields"]
            if "timestamp-millis" in str(f["type"]) and SAMPLES[topic][f["name"]] is not None]
    for topic in ALL_TOPICS
}


def _confluent_serializer(registry, topic):
    return AvroSerializer(registry, schema_text(RECORD_OF_TOPIC[topic]),
                          conf={"auto.register.schemas": True, "subject.name.strategy": topic_subject_name_strategy})


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_bytes_equal_confluent_serializer_and_confluent_deserializer_reads_them(topic):
    registry = registry_client(None)
    codec = Codec(registry)
    ctx = SerializationContext(topic, MessageField.VALUE)
    ours = codec.encode(topic, SAMPLES[topic])
    assert ours == _confluent_serializer(registry, topic)(SAMPLES[topic], ctx)
    theirs = AvroDeserializer(registry)(ours, ctx)
    assert {k: to_ms(v) if isinstance(v, datetime) else v for k, v in theirs.items()} == SAMPLES[topic]
    assert all(isinstance(theirs[name], datetime) for name in TIME_FIELDS[topic])  # a logical type outside


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_times_decode_as_epoch_ms_ints_and_datetimes_still_encode(topic):
    codec = Codec(registry_client(None))
    data = codec.encode(topic, SAMPLES[topic])
    decoded = codec.decode(topic, data)
    assert decoded == SAMPLES[topic]
    assert all(type(decoded[name]) is int for name in TIME_FIELDS[topic])
    with_datetimes = {**SAMPLES[topic], **{name: datetime.fromtimestamp(SAMPLES[topic][name] / 1000, tz=timezone.utc)
                                           for name in TIME_FIELDS[topic]}}
    assert codec.encode(topic, with_datetimes) == data


def test_schema_is_registered_once_per_topic_not_per_record():
    registry = registry_client("mock://codec-wire-once")
    calls = []
    real_register = registry.register_schema

    class Counting:  # not the mock's class name: no registration up front
        def register_schema(self, *args, **kwargs):
            calls.append(args[0])
            return real_register(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(registry, name)

    codec = Codec(Counting())
    for _ in range(50):
        codec.encode("labels", SAMPLES["labels"])
        codec.encode("features", SAMPLES["features"])
    assert sorted(calls) == ["features-value", "labels-value"]


class _RegistryAway:
    def register_schema(self, *args, **kwargs):
        raise ConnectionError("connection refused")

    def get_schema(self, *args, **kwargs):
        raise ConnectionError("connection refused")

    def get_versions(self, *args, **kwargs):
        raise ConnectionError("connection refused")


def test_registry_away_is_a_dependency_not_a_bad_record():
    data = Codec(registry_client(None)).encode("labels", SAMPLES["labels"])
    away = Codec(_RegistryAway())
    with pytest.raises(DependencyUnavailable, match="schema registry"):
        away.encode("labels", SAMPLES["labels"])
    with pytest.raises(DependencyUnavailable, match="schema registry"):
        away.decode("labels", data)


def test_a_record_that_fits_neither_schema_is_a_violation_naming_the_field():
    codec = Codec(registry_client(None))
    with pytest.raises(SchemaViolation, match="event_time"):
        codec.encode("features", {**SAMPLES["features"], "event_time": "yesterday"})


def test_without_logical_types_keeps_everything_else():
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "t", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None}]}
    assert without_logical_types(schema) == {"type": "record", "name": "R", "fields": [
        {"name": "t", "type": ["null", {"type": "long"}], "default": None}]}


@pytest.mark.parametrize("backend", ["cavro", "fastavro"])
def test_both_decoding_backends_read_every_topic_alike_and_refuse_bad_bytes(backend):
    import random

    from driftline.codec import UndecodableRecord

    registry = registry_client(None)
    writer, reader = Codec(registry), Codec(registry, backend=backend)
    rng = random.Random(12)
    for topic in ALL_TOPICS:
        data = writer.encode(topic, SAMPLES[topic])
        assert reader.decode(topic, data) == SAMPLES[topic]
        assert reader.decode(topic, data + b"\x00") == SAMPLES[topic]  # trailing bytes are ignored, as ever
        for cut in range(5, len(data) - 1):  # any truncated body: a record or UndecodableRecord, nothing else
            try:
                assert isinstance(reader.decode(topic, data[:cut]), dict)
            except UndecodableRecord:
                pass
        flipped = bytearray(data)
        flipped[rng.randrange(5, len(data))] ^= 0x80
        try:
            reader.decode(topic, bytes(flipped))
        except UndecodableRecord:
            pass
    with pytest.raises(UndecodableRecord, match="not a version of subject"):
        reader.decode("labels", writer.encode("features", SAMPLES["features"]))


def test_an_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="no Avro decoding backend 'avro-java'"):
        Codec(registry_client(None), backend="avro-java")


def test_a_fresh_in_process_registry_gives_every_topic_the_same_id_whichever_topic_comes_first():
    """A restarted ``driftline up`` reads the ids its previous process wrote on the persistent bus."""
    first = Codec(registry_client("mock://codec-wire-first-process"))
    written = {topic: first.encode(topic, SAMPLES[topic]) for topic in ALL_TOPICS}
    second = Codec(registry_client("mock://codec-wire-second-process"))
    for topic in reversed(ALL_TOPICS):  # another order of first use
        assert second.encode(topic, SAMPLES[topic])[:5] == written[topic][:5]
        assert second.decode(topic, written[topic]) == SAMPLES[topic]
    assert len({data[1:5] for data in written.values()}) == len(ALL_TOPICS)
