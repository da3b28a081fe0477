import pytest

from driftline.codec import Codec, SchemaViolation, UndecodableRecord, registry_client, schema_fields
from driftline.testing.samples import SAMPLES
from driftline.topics import ALL_TOPICS, LABELS, PREDICTIONS, RECORD_OF_TOPIC


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


def test_a_shared_codec_decodes_the_same_bytes_once_and_hands_out_copies() -> None:
    """shared_decodes (the embedded mode): a second consumer of the same bytes gets the first's
    decode, as its own top-level dict; another topic's reading of them is still checked; memory
    stays bounded by two generations."""
    codec = Codec(registry_client(None))
    codec.share_decodes([LABELS], size=4)
    data = codec.encode(LABELS, {"model": "m", "event_id": "e1", "label": "1", "value": None, "label_time": 5})
    calls = []
    read = codec.decode(LABELS, data)
    real_reader = codec._readers[(LABELS, data[1:5])]
    codec._readers[(LABELS, data[1:5])] = lambda b: calls.append(b) or real_reader(b)
    again = codec.decode(LABELS, data)
    assert again == read and again is not read and calls == []  # not decoded again
    again["label"] = "changed"
    assert codec.decode(LABELS, data)["label"] == "1"  # a caller's change stays its own
    with pytest.raises(UndecodableRecord):
        codec.decode(PREDICTIONS, data)  # the same bytes on another topic: not a Prediction
    for i in range(20):
        codec.decode(LABELS, codec.encode(LABELS, {"model": "m", "event_id": f"e{i + 2}", "label": "0",
                                                   "value": None, "label_time": i}))
    assert sum(len(g[LABELS]) for g in (codec._shared._newer, codec._shared._older)) <= 8
    codec.decode(LABELS, data)
    assert calls.count(data) == 1  # forgotten, so decoded again
