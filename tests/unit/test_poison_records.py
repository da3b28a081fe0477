"""The poison records of issue 10, written straight to the topics, through the embedded pipeline.

A producer that writes to Kafka directly is not held to ingest's bounds: a feature of
``1e308`` or ``inf``, a joined label whose error is NaN, a record of another topic's
schema. Each must end in ``dead_letters`` (once) while every record batched with it and
after it is processed, and a restart over the same ``DRIFTLINE_HOME`` must change nothing:
no second dead letter, no prediction or join counted twice.

The model is not the demo's: a cold-chain spoilage classifier (temperature and hours
out of the fridge, a categorical carrier).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from driftline.config import Settings
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_RECIPE
from driftline.topics import FEATURES, LABELED, LABELS, PREDICTIONS
from driftline.training import train

MODEL = "cold-chain"
CONTRACT = FeatureContract(numeric=("box_temp_c", "hours_out"), categorical=("carrier",), classes=("0", "1"))
CARRIERS = np.array(["swift", "polar", "tundra"], dtype=object)
START_MS = 1_767_225_600_000
N = 300
POISON_FEATURES = {100: 1e308, 101: math.inf, 250: -math.inf}  # event index -> box_temp_c


def shipments(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame({"box_temp_c": rng.normal(4, 2, n), "hours_out": rng.exponential(2, n),
                          "carrier": rng.choice(CARRIERS, n)})
    labels = np.where(0.8 * (frame["box_temp_c"] - 4) + frame["hours_out"] + rng.normal(0, 1, n) > 2.5, "1", "0")
    return frame, labels.astype(object)


def event(i: int, row, temp: float | None = None) -> dict:
    return {"model": MODEL, "event_id": f"crate-{i}", "entity_id": f"truck-{i % 9}", "event_time": START_MS + i * 100,
            "numeric_features": {"box_temp_c": float(row.box_temp_c if temp is None else temp),
                                 "hours_out": float(row.hours_out)},
            "categorical_features": {"carrier": row.carrier}}


def nan_labeled(i: int) -> dict:
    # An event id no real label has: the drift-detector counts each (model, event_id) once, so
    # a poison copy of a genuine join that it read second would be skipped, not raised on.
    return {"prediction_id": f"crate-nan-{i}:1:champion", "event_id": f"crate-nan-{i}", "model": MODEL, "model_version": 1,
            "role": "champion", "score": 0.4, "predicted_label": "0", "label": "1", "value": math.nan,
            "error": math.nan, "event_time": START_MS, "prediction_time": START_MS, "label_time": START_MS}


def counts(app: Embedded) -> dict:
    q = app.store.scalar
    m = {"m": MODEL}
    return {
        "predictions": q("SELECT count() FROM predictions FINAL WHERE model = {m:String} AND role = 'champion'", m),
        "joined": q("SELECT count() FROM labels FINAL WHERE model = {m:String} AND status = 'joined'", m),
        "dead_letters": q("SELECT count() FROM dead_letters FINAL"),
        "dead_letter_rows": q("SELECT count() FROM dead_letters"),
    }


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def test_poison_records_end_in_dead_letters_and_a_restart_changes_nothing(home) -> None:
    rng = np.random.default_rng(5)
    app = Embedded(Settings(home=home, batch_size=1000), persistent=True)
    try:
        frame, labels = shipments(rng, 3000)
        trained = train(DEFAULT_RECIPE, CONTRACT, frame, labels)
        version = app.registry.register(MODEL, trained.estimator, CONTRACT, actor="t", recipe=DEFAULT_RECIPE,
                                        profile=trained.profile)
        app.registry.set_alias(MODEL, "champion", version.version, actor="t", reason="first")
        app.pump()

        live, live_labels = shipments(rng, N)
        producer, codec = app.bus.producer(), app.codec
        for i, row in enumerate(live.itertuples(index=False)):
            e = event(i, row, POISON_FEATURES.get(i))
            producer.produce(FEATURES, codec.encode(FEATURES, e), key=e["event_id"].encode())
            if i == 200:  # records of another topic's schema, in the middle of the stream
                producer.produce(FEATURES, codec.encode(LABELS, {"model": MODEL, "event_id": "crate-x", "label": "1",
                                                                  "value": None, "label_time": START_MS}))
                producer.produce(PREDICTIONS, codec.encode(LABELS, {"model": MODEL, "event_id": "crate-y",
                                                                     "label": "1", "value": None, "label_time": START_MS}))
                producer.produce(LABELS, codec.encode(FEATURES, e))
                producer.produce(LABELED, codec.encode(LABELED, nan_labeled(i)))  # NaN error: the detector's poison
        for i, label in enumerate(live_labels):
            producer.produce(LABELS, codec.encode(LABELS, {"model": MODEL, "event_id": f"crate-{i}", "label": label,
                                                           "value": None, "label_time": START_MS + i * 100 + 50}))
        app.pump()

        good = N - len(POISON_FEATURES)
        _, letters = app.store.query("SELECT service, topic, error FROM dead_letters FINAL ORDER BY service, topic")
        by_place = sorted((service, topic) for service, topic, _ in letters)
        # A feature the model cannot score is dead-lettered, by the predictor's own check (inf, or
        # beyond float32 as 1e308) or by the runner's policy; a poison that is scored anyway must
        # have a finite score, as any other.
        unscorable = {e for e in app.store.query(
            "SELECT payload FROM dead_letters FINAL WHERE service = 'predictor' "
            "AND error NOT LIKE '%not a version of subject%'")[1]}
        scored_poison = app.store.query(
            "SELECT event_id, score FROM predictions FINAL WHERE event_id IN {ids:Array(String)}",
            {"ids": [f"crate-{i}" for i in POISON_FEATURES]})[1]
        assert len(unscorable) + len(scored_poison) == len(POISON_FEATURES)
        assert {event_id for event_id, _ in scored_poison} <= {"crate-100"}  # inf and -inf are never scored
        assert all(math.isfinite(score) for _, score in scored_poison)
        assert by_place == sorted([("predictor", FEATURES)] * (len(unscorable) + 1)
                                  + [("label-joiner", PREDICTIONS), ("drift-detector", PREDICTIONS),
                                     ("label-joiner", LABELS), ("drift-detector", LABELED)])
        errors = {error for _, _, error in letters}
        assert any("not a version of subject" in e for e in errors)
        assert "ValueError: errors must be finite" in errors  # the logic's own exception, named
        before = counts(app)
        # Every event batched with a poison one, or after it, is scored; their labels join.
        assert before["predictions"] == good + len(scored_poison)
        assert before["joined"] == good + len(scored_poison)  # labels of unscored events wait (pending)
        assert before["dead_letters"] == len(letters) == 4 + len(unscorable) + 1
        detector = next(r for r in app.runners if r.service.name == "drift-detector")
        assert detector.healthy and detector.dead_lettered == 2
    finally:
        app.close()

    again = Embedded(Settings(home=home, batch_size=1000), persistent=True)  # a restart over the same home
    try:
        again.pump()
        assert counts(again) == before
        assert sum(runner.processed for runner in again.runners) == 0  # everything had been committed
    finally:
        again.close()
