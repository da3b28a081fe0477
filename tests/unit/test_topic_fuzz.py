"""Property-based fuzzing of every topic the runner services consume, in embedded mode.

Raw bytes, wire-format headers with unknown schema ids, truncated records and valid
Avro records of *another* topic's schema are written straight to the topics (as a
producer writing to Kafka directly could), mixed with good events and labels of a
model of our own (a greenhouse sensor classifier, not the demo's data). After every
pump: no runner stopped, every bad record is in ``dead_letters`` once per service
that consumes its topic, with the reason, and every good record was processed
(a champion prediction per event, a joined label per label).

Many bad records go into one pump, so a few hundred examples cover thousands of cases.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from itertools import count

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from driftline.codec import schema_text
from driftline.config import Settings
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_RECIPE
from driftline.topics import FEATURES, LABELED, LABELS, MODELS, PREDICTIONS, RECORD_OF_TOPIC, RETRAIN
from driftline.training import train

MODEL = "greenhouse-mould"
CONTRACT = FeatureContract(numeric=("humidity_pct", "leaf_temp_c"), categorical=("zone",), classes=("0", "1"))
ZONES = np.array(["north", "south", "atrium"], dtype=object)
START_MS = 1_767_225_600_000

#: topic -> the runner services that consume it (the predictor and the drift-detector read models on
#: their control consumers).
CONSUMERS = {FEATURES: ["predictor"], MODELS: ["predictor", "drift-detector"],
             PREDICTIONS: ["label-joiner", "drift-detector"], LABELS: ["label-joiner"], LABELED: ["drift-detector"],
             RETRAIN: ["retrainer"]}
REASONS = ("not Confluent wire format", "is not a version of subject", "cannot decode", "no room for a schema id")


def greenhouse(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame({"humidity_pct": rng.normal(70, 8, n), "leaf_temp_c": rng.normal(22, 3, n),
                          "zone": rng.choice(ZONES, n)})
    labels = np.where(0.2 * (frame["humidity_pct"] - 70) + rng.normal(0, 1, n) > 0, "1", "0").astype(object)
    return frame, labels


# -- records of any topic's schema, from its .avsc -------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_millis = st.integers(0, 4_102_444_800_000)  # up to 2100: a timestamp fastavro can turn into a datetime


def _of_type(avro_type):
    if isinstance(avro_type, list):  # a union
        return st.one_of(*[_of_type(t) for t in avro_type])
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return _millis
        kind = avro_type["type"]
        if kind == "map":
            return st.dictionaries(_text, _of_type(avro_type["values"]), max_size=3)
        if kind == "array":
            return st.lists(_of_type(avro_type["items"]), max_size=2)
        if kind == "record":
            return st.fixed_dictionaries({f["name"]: _of_type(f["type"]) for f in avro_type["fields"]})
        return _of_type(kind)
    return {"null": st.none(), "string": _text, "int": st.integers(-2**31, 2**31 - 1),
            "long": st.integers(-2**63, 2**63 - 1), "double": st.floats(allow_nan=False, allow_infinity=False),
            "bytes": st.binary(max_size=8), "boolean": st.booleans()}[avro_type]


def record_of(record_name: str):
    return _of_type(json.loads(schema_text(record_name)))


# -- the pipeline under test ------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    embedded = Embedded(Settings(home=tmp_path_factory.mktemp("fuzz-home")))
    try:
        rng = np.random.default_rng(11)
        frame, labels = greenhouse(rng, 2000)
        trained = train(DEFAULT_RECIPE, CONTRACT, frame, labels)
        version = embedded.registry.register(MODEL, trained.estimator, CONTRACT, actor="fuzz", recipe=DEFAULT_RECIPE,
                                             profile=trained.profile)
        embedded.registry.set_alias(MODEL, "champion", version.version, actor="fuzz", reason="first")
        embedded.pump()
        yield embedded
    finally:
        embedded.close()


class Ledger:
    """What went in, to compare with what came out: dead letters expected, good ids sent."""

    def __init__(self):
        self.dead = Counter()  # (service, topic, payload hex) -> letters expected
        self.events: list[str] = []
        self.labels: list[str] = []
        self.ids = count()
        self.cases = 0


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def wrong_schema(topic: str):
    """A valid record of a schema that is not ``topic``'s (encoded under its own topic's subject)."""
    others = [t for t in RECORD_OF_TOPIC if RECORD_OF_TOPIC[t] != RECORD_OF_TOPIC[topic]]
    return st.sampled_from(others).flatmap(lambda other: record_of(RECORD_OF_TOPIC[other]).map(
        lambda record: ("wrong-schema", other, record)))


def raw_bytes():
    not_wire = st.binary(max_size=40).filter(lambda b: not b or b[0] != 0)
    short_header = st.binary(max_size=3).map(lambda b: b"\x00" + b)
    unknown_id = st.tuples(st.integers(10_000, 2**32 - 1), st.binary(max_size=40)).map(
        lambda t: b"\x00" + struct.pack(">I", t[0]) + t[1])
    return st.one_of(not_wire, short_header, unknown_id).map(lambda b: ("raw", None, b))


def truncated(topic: str):
    """A good record of the topic cut short: the header and part of its body."""
    return st.tuples(record_of(RECORD_OF_TOPIC[topic]), st.floats(0.0, 0.99)).map(
        lambda t: ("truncated", topic, t))


def bad_records(topic: str):
    return st.lists(st.one_of(raw_bytes(), wrong_schema(topic), truncated(topic)), min_size=25, max_size=60)


def _bytes(app: Embedded, kind: str, source: str | None, value, topic: str) -> bytes | None:
    if kind == "raw":
        return value
    if kind == "wrong-schema":
        return app.codec.encode(source, value)
    record, keep = value
    data = app.codec.encode(source, record)
    cut = data[:5 + int((len(data) - 5) * keep)]
    try:  # a cut that still decodes to a whole record (trailing optional bytes) is not bad
        app.codec.decode(topic, cut)
    except ValueError:
        return cut
    return None


def good_records(app: Embedded, ledger: Ledger, n: int, rng: np.random.Generator) -> list[tuple[str, bytes, bytes]]:
    frame, labels = greenhouse(rng, n)
    out = []
    for row, label in zip(frame.itertuples(index=False), labels):
        i = next(ledger.ids)
        event_id = f"plant-{i}"
        event = {"model": MODEL, "event_id": event_id, "entity_id": f"bed-{i % 17}", "event_time": START_MS + i * 100,
                 "numeric_features": {"humidity_pct": float(row.humidity_pct), "leaf_temp_c": float(row.leaf_temp_c)},
                 "categorical_features": {"zone": row.zone}}
        out.append((FEATURES, event_id.encode(), app.codec.encode(FEATURES, event)))
        out.append((LABELS, event_id.encode(), app.codec.encode(LABELS, {
            "model": MODEL, "event_id": event_id, "label": label, "value": None, "label_time": START_MS + i * 100 + 5})))
        ledger.events.append(event_id)
    return out


@pytest.mark.parametrize("topic", sorted(CONSUMERS))
@hsettings(max_examples=15, deadline=None, database=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_bad_records_on_every_topic_are_dead_lettered_and_good_ones_processed(app, ledger, topic, data) -> None:
    drawn = data.draw(bad_records(topic), label="bad records")
    rng = np.random.default_rng(len(ledger.events))
    good = good_records(app, ledger, 5, rng)
    producer = app.bus.producer()
    # Good and bad interleaved, in one pump: the bad ones share batches with good ones.
    for k, (kind, source, value) in enumerate(drawn):
        payload = _bytes(app, kind, source, value, topic)
        if payload is not None:
            producer.produce(topic, payload, key=f"bad-{k}".encode())
            for service in CONSUMERS[topic]:
                ledger.dead[(service, topic, payload.hex())] += 1
            ledger.cases += 1
        if k < len(good):
            producer.produce(good[k][0], good[k][2], key=good[k][1])
    for topic_, key, payload in good[len(drawn):]:
        producer.produce(topic_, payload, key=key)

    app.pump()  # raises if any runner stopped

    _, rows = app.store.query("SELECT service, topic, lower(hex(payload)), error FROM dead_letters FINAL")
    assert Counter((s, t, p) for s, t, p, _ in rows) == ledger.dead  # each bad record, nothing good
    assert all(any(reason in error for reason in REASONS) for *_, error in rows)
    predicted = app.store.scalar("SELECT uniqExact(event_id) FROM predictions FINAL WHERE model = {m:String} "
                                 "AND role = 'champion'", {"m": MODEL})
    joined = app.store.scalar("SELECT uniqExact(event_id) FROM labels FINAL WHERE model = {m:String} "
                              "AND status = 'joined'", {"m": MODEL})
    assert predicted == len(ledger.events) and joined == len(ledger.events)


def test_the_fuzzing_covered_thousands_of_cases_on_every_topic(ledger) -> None:
    """Runs after the property (file order): the cases really went through every topic."""
    print(f"fuzz: {ledger.cases} bad records on {len(CONSUMERS)} topics, {len(ledger.events)} good events and labels")
    assert ledger.cases >= 2000, ledger.cases
    assert {topic for _, topic, _ in ledger.dead} == set(CONSUMERS)
