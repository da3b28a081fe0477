import pytest

from driftline.codec import Codec, SchemaViolation, UndecodableRecord, registry_client, schema_fields
from driftline.topics import ALL_TOPICS, RECORD_OF_TOPIC

T = 1_767_225_600_123

SAMPLES = {
    "features": {"model": "credit", "event_id": "e1", "entity_id": "c1", "event_time": T,
                 "numeric_features": {"income": 5e4}, "categorical_features": {"region": "north"}},
    "predictions": {"prediction_id": "e1:1:champion", "event_id": "e1", "entity_id": "c1", "model": "credit",
                    "model_version": 1, "role": "champion", "score": 0.25, "scores": {"0": 0.75, "1": 0.25},
                    "predicted_label": "0", "numeric_features": {"income": 5e4},
                    "categorical_features": {"region": "north"}, "event_time": T, "prediction_time": T + 5},
    "labels": {"model": "credit", "event_id": "e1", "label": "1", "value": None, "label_time": T + 9},
    "labeled": {"prediction_id": "e1:1:champion", "event_id": "e1", "model": "credit", "model_version": 1,
                "role": "champion", "score": 0.25, "predicted_label": "0", "label": "1", "value": None,
                "error": 1.0, "event_time": T, "prediction_time": T + 5, "label_time": T + 9},
    "drift": {"model": "credit", "model_version": 1, "kind": "data", "feature": "income", "statistic": "psi",
              "value": 0.31, "band": "act", "window_start": 0, "window_end": 10, "n": 10, "detected_at": T, "threshold": 0.25,
              "threshold_mode": "fixed", "event_time": None, "partition": None, "offset": None, "stream_index": None},
    "retrain": {"request_id": "r1", "model": "credit", "model_version": 1, "reason": "psi", "signals": [
        {"kind": "data", "feature": "income", "statistic": "psi", "value": 0.3, "window_start": 0, "window_end": 1}],
        "window_start": T, "window_end": T + 1, "requested_at": T + 2, "incident_id": "r1", "attempt": 1,
        "min_rows": 3000},
    "models": {"model": "credit", "version": 2, "action": "alias_moved", "alias": "champion", "previous_version": 1,
               "sha256": "ab" * 32, "actor": "retrainer", "reason": "won", "occurred_at": T, "request_id": "r1"},
    "dlq": {"dead_letter_id": "d1", "service": "ingest", "topic": "/v1/events", "partition": None, "offset": None,
            "key": None, "payload": b"\x00not json", "error": "bad", "received_at": T},
}


@pytest.fixture(scope="module")
def codec():
    return Codec(registry_client(None))


def _as_ms(record):
    from datetime import datetime

    from driftline.timeutil import to_ms

    return {k: to_ms(v) if isinstance(v, datetime) else v for k, v in record.items()}


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_every_schema_round_trips_in_confluent_wire_format(codec, topic):
    assert set(SAMPLES[topic]) == set(schema_fields(RECORD_OF_TOPIC[topic]))
    data = codec.encode(topic, SAMPLES[topic])
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") > 0  # magic byte, schema id
    assert _as_ms(codec.decode(topic, data)) == SAMPLES[topic]


def test_a_record_that_violates_its_schema_names_the_field(codec):
    bad = {**SAMPLES["features"], "numeric_features": {"income": "lots"}}
    with pytest.raises(SchemaViolation, match="numeric_features"):
        codec.encode("features", bad)
    missing = {k: v for k, v in SAMPLES["labels"].items() if k != "label"}
    with pytest.raises(SchemaViolation, match="label"):
        codec.encode("labels", missing)


@pytest.mark.parametrize("data", [b"", b"{\"json\": 1}", b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x7f\xff\x02"])
def test_bytes_that_are_not_a_record_raise_undecodable(codec, data):
    codec.encode("labels", SAMPLES["labels"])  # make sure schema id 1 exists
    with pytest.raises(UndecodableRecord):
        codec.decode("labels", data)
