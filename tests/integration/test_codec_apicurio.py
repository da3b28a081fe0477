"""Against a real registry (Apicurio's Confluent API): the codec registers each topic's schema
as confluent-kafka's AvroSerializer does, so both write the same bytes, and AvroDeserializer
reads ours back."""

from datetime import datetime

import pytest
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from driftline.codec import Codec, registry_client, schema_text
from driftline.timeutil import to_ms
from driftline.topics import ALL_TOPICS, RECORD_OF_TOPIC
from driftline.testing.samples import SAMPLES


def test_every_topic_writes_what_avro_serializer_writes_on_a_real_registry(schema_registry_url):
    registry = registry_client(schema_registry_url)
    codec = Codec(registry)
    for topic in ALL_TOPICS:
        ctx = SerializationContext(topic, MessageField.VALUE)
        serializer = AvroSerializer(registry, schema_text(RECORD_OF_TOPIC[topic]),
                                    conf={"auto.register.schemas": True,
                                          "subject.name.strategy": topic_subject_name_strategy})
        ours = codec.encode(topic, SAMPLES[topic])
        assert ours == serializer(SAMPLES[topic], ctx), topic
        theirs = AvroDeserializer(registry)(ours, ctx)
        assert {k: to_ms(v) if isinstance(v, datetime) else v for k, v in theirs.items()} == SAMPLES[topic]
        assert codec.decode(topic, ours) == SAMPLES[topic]
