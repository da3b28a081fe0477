"""The README's Avro producer, run as written against a real Kafka and Apicurio, read back with driftline's codec."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from driftline.bus.kafka import KafkaBus
from driftline.codec import Codec, registry_client
from driftline.topics import FEATURES

ROOT = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Avro straight to the `features` topic", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_avro_producer_writes_a_feature_event_driftline_reads(kafka_bootstrap, schema_registry_url,
                                                                        monkeypatch):
    bus = KafkaBus(kafka_bootstrap)
    bus.create_topics({FEATURES: 3})  # our broker does not create topics on first use
    event_id = f"readme-{uuid.uuid4().hex[:8]}"
    code = readme_snippet()
    for placeholder, actual in (("http://localhost:8080/apis/ccompat/v7", schema_registry_url),
                                ("localhost:9094", kafka_bootstrap), ('"event_id": "e1"', f'"event_id": "{event_id}"')):
        assert placeholder in code
        code = code.replace(placeholder, actual)
    monkeypatch.chdir(ROOT)  # the snippet opens schemas/FeatureEvent.avsc from a checkout
    exec(compile(code, "README.md", "exec"), {})

    consumer = bus.consumer(f"readme-{event_id}", [FEATURES])
    codec = Codec(registry_client(schema_registry_url))
    deadline = time.monotonic() + 60
    found = []
    while not found and time.monotonic() < deadline:  # waits on the record, up to a minute
        found = [(m, r) for m in consumer.poll_batch(500, 1.0)
                 if (r := codec.decode(FEATURES, m.value))["event_id"] == event_id]
    consumer.close()
    assert found, "the README producer's record never reached the features topic"
    ((message, record),) = found
    assert message.key == b"c42"
    assert record["model"] == "churn" and record["numeric_features"] == {"tenure_months": 30.0}
    assert record["categorical_features"] == {"plan": "pro"} and abs(record["event_time"] / 1000 - time.time()) < 3600
