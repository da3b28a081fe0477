"""Regression and multiclass models through the embedded pipeline, on data that is not the demo's.

Each story streams events and their labels in chunks, with a concept change
half-way (the target's relation to the features changes, the features do not):
the error stream (absolute error for regression, 0/1 for multiclass) moves,
the river detector sees it, the retrainer trains a challenger on the stored
labels and gates it on the task's metric (MAE, lower is better; accuracy),
and SQL shows the metric per model version.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from driftline.codec import Codec, registry_client
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_REGRESSION_RECIPE, build_pipeline
from driftline.topics import FEATURES, LABELS
from driftline.training import evaluation_metrics, reference_profile, train

EPOCH_MS = 1_767_225_600_000  # 2026-01-01: inside ingest's past bound, reproducible
SPACING_MS = 10
EVENTS = 8000
CHANGE_AT = 4000
CHUNK = 500
DISTRICTS = np.array(["harbour", "hill", "old_town"], dtype=object)

HOUSES = FeatureContract(numeric=("floor_area", "rooms"), categorical=("district",), task="regression", classes=())
FLOWERS = FeatureContract(numeric=("petal_length", "petal_width"), categorical=("soil",),
                          classes=("iris_a", "iris_b", "iris_c"))


@pytest.fixture
def small_windows(monkeypatch):
    """Drift windows of 1,000 events and a retrainer that needs 1,000 labelled rows."""
    monkeypatch.setenv("DRIFTLINE_DRIFT_WINDOW_SIZE", str(1000 * SPACING_MS))
    monkeypatch.setenv("DRIFTLINE_RETRAIN_MIN_ROWS", "1000")
    monkeypatch.setenv("DRIFTLINE_DRIFT_MIN_EVENTS", "200")


# -- data ------------------------------------------------------------------------------------

def houses(seed: int, n: int, changed: np.ndarray | bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """House prices (thousands); after the change the price per m² doubles."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"floor_area": rng.uniform(40, 200, n), "rooms": rng.integers(1, 7, n).astype(float),
                          "district": rng.choice(DISTRICTS, n)})
    per_m2 = np.where(changed, 6.0, 3.0)
    bonus = frame["district"].map({"harbour": 80.0, "hill": 40.0, "old_town": 0.0}).to_numpy()
    price = per_m2 * frame["floor_area"].to_numpy() + 15 * frame["rooms"].to_numpy() + bonus + rng.normal(0, 10, n)
    return frame, price


def flowers(seed: int, n: int, changed: np.ndarray | bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Three classes by petal length; after the change the classes' order is reversed."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"petal_length": rng.uniform(0, 3, n), "petal_width": rng.normal(1, 0.3, n),
                          "soil": rng.choice(np.array(["clay", "sand"], dtype=object), n)})
    which = np.clip(frame["petal_length"].to_numpy() + rng.normal(0, 0.15, n), 0, 2.999).astype(int)
    which = np.where(changed, 2 - which, which)
    return frame, np.array(FLOWERS.classes, dtype=object)[which]


def events_of(model: str, frame: pd.DataFrame, contract: FeatureContract, start: int) -> list[dict]:
    return [{"model": model, "event_id": f"{model}-{start + i:06d}", "entity_id": f"e{(start + i) % 97}",
             "event_time": EPOCH_MS + (start + i) * SPACING_MS,
             "numeric_features": {c: float(frame[c].iloc[i]) for c in contract.numeric},
             "categorical_features": {c: str(frame[c].iloc[i]) for c in contract.categorical}}
            for i in range(len(frame))]


def stream(app: Embedded, model: str, contract: FeatureContract, make, seed: int) -> None:
    """EVENTS events with their labels, in chunks; the concept changes at CHANGE_AT."""
    index = np.arange(EVENTS)
    frame, target = make(seed, EVENTS, changed=index >= CHANGE_AT)
    for start in range(0, EVENTS, CHUNK):
        part = frame.iloc[start:start + CHUNK].reset_index(drop=True)
        result = app.ingest.submit(FEATURES, events_of(model, part, contract, start))
        assert not result.rejected, result.rejected[:3]
        app.pump()
        if contract.task == "regression":
            labels = [{"model": model, "event_id": f"{model}-{start + i:06d}", "value": float(target[start + i])}
                      for i in range(len(part))]
        else:
            labels = [{"model": model, "event_id": f"{model}-{start + i:06d}", "label": str(target[start + i])}
                      for i in range(len(part))]
        result = app.ingest.submit(LABELS, labels)
        assert not result.rejected, result.rejected[:3]
        app.pump()


def register_champion(app: Embedded, model: str, contract: FeatureContract, recipe: dict, make) -> None:
    frame, target = make(1, 4000)
    held_out, held_target = make(2, 2000)
    trained = train(recipe, contract, frame, target)
    app.registry.register(model, trained.estimator, contract, actor="test", reason="first", recipe=recipe,
                          metrics=evaluation_metrics(trained.estimator, contract, held_out, held_target),
                          profile=reference_profile(trained.estimator, contract, held_out))
    app.registry.set_alias(model, "champion", 1, actor="test", reason="first")


def retrain_outcomes(app: Embedded) -> list[dict]:
    retrainer = next(r.service for r in app.runners if r.service.name == "retrainer")
    return retrainer.outcomes


# -- regression ------------------------------------------------------------------------------

def test_regression_end_to_end_absolute_error_concept_change_and_mae_gate(settings, small_windows):
    app = Embedded()
    try:
        register_champion(app, "houses", HOUSES, DEFAULT_REGRESSION_RECIPE, houses)
        champion = app.registry.load("houses", "champion").estimator
        stream(app, "houses", HOUSES, houses, seed=7)

        # predictions carry the predicted value as score (and as text in predicted_label), no class scores
        _, rows = app.store.query(
            "SELECT event_id, score, predicted_label, scores FROM predictions FINAL "
            "WHERE model = 'houses' AND model_version = 1 AND role = 'champion' ORDER BY event_id LIMIT 50")
        frame, _ = houses(7, EVENTS, changed=np.arange(EVENTS) >= CHANGE_AT)
        expected = champion.predict(frame.iloc[:50])
        assert [r[0] for r in rows] == [f"houses-{i:06d}" for i in range(50)]
        np.testing.assert_allclose([r[1] for r in rows], expected, rtol=1e-9)
        assert all(float(r[2]) == r[1] and r[3] == {} for r in rows)

        # every label joined, its error the absolute difference to the champion's prediction
        assert app.store.scalar("SELECT count() FROM predictions FINAL WHERE model = 'houses' AND role = 'champion'") == EVENTS
        _, joined = app.store.query(
            "SELECT l.value, p.score, l.error FROM labels AS l FINAL INNER JOIN "
            "(SELECT event_id, score FROM predictions FINAL WHERE model = 'houses' AND role = 'champion') AS p "
            "ON p.event_id = l.event_id WHERE l.model = 'houses' AND l.status = 'joined'")
        assert len(joined) == EVENTS
        value, score, error = (np.array(c, dtype=float) for c in zip(*joined))
        np.testing.assert_allclose(error, np.abs(value - score), rtol=1e-9, atol=1e-9)

        # the concept change was detected and a challenger gated on MAE replaced the champion
        _, concept = app.store.query(
            "SELECT window_start FROM drift_metrics FINAL WHERE model = 'houses' AND model_version = 1 "
            "AND kind = 'concept'")
        assert concept and min(r[0] for r in concept) >= CHANGE_AT  # nothing before the change
        outcomes = retrain_outcomes(app)
        assert [o["outcome"] for o in outcomes] == ["promoted"], outcomes
        metrics = outcomes[0]["metrics"]
        assert metrics["holdout_mae"] < metrics["champion_holdout_mae"] / 2
        assert "challenger mae" in outcomes[0]["reason"] and "lower is better" in outcomes[0]["reason"]
        assert app.registry.aliases("houses")["champion"] == 2

        # MAE per version by SQL: v1 before the change ~ noise, v1 after it large, v2 back near noise
        _, mae = app.store.query(
            "SELECT model_version, avg(error), count() FROM labels FINAL WHERE model = 'houses' AND status = 'joined' "
            "GROUP BY model_version ORDER BY model_version")
        by_version = {v: (m, n) for v, m, n in mae}
        assert set(by_version) == {1, 2} and sum(n for _, n in by_version.values()) == EVENTS
        assert by_version[2][0] < by_version[1][0] / 2
        assert by_version[2][0] < 20  # noise sd 10: MAE ~ 8 for a model of the right concept
    finally:
        app.close()


# -- multiclass ------------------------------------------------------------------------------

def test_multiclass_end_to_end_misclassification_concept_change_and_accuracy_gate(settings, small_windows):
    recipe = {"estimator": "logistic_regression", "params": {"C": 10.0, "max_iter": 1000}}
    app = Embedded()
    try:
        register_champion(app, "flowers", FLOWERS, recipe, flowers)
        stream(app, "flowers", FLOWERS, flowers, seed=8)

        _, rows = app.store.query(
            "SELECT score, scores, predicted_label FROM predictions FINAL "
            "WHERE model = 'flowers' AND model_version = 1 AND role = 'champion' LIMIT 200")
        for score, scores, predicted in rows:
            assert set(scores) == set(FLOWERS.classes)
            assert predicted == max(scores, key=scores.get)
            assert score == pytest.approx(max(scores.values()))  # the predicted class's probability

        _, joined = app.store.query(
            "SELECT label, predicted_label, error FROM labels FINAL WHERE model = 'flowers' AND status = 'joined'")
        assert len(joined) == EVENTS
        assert all(error == (0.0 if label == predicted else 1.0) for label, predicted, error in joined)

        outcomes = retrain_outcomes(app)
        assert [o["outcome"] for o in outcomes] == ["promoted"], outcomes
        assert "challenger accuracy" in outcomes[0]["reason"]
        # accuracy per version by SQL, after the change: v1 keeps the old concept, v2 learnt the new one
        _, accuracy = app.store.query(
            "SELECT model_version, 1 - avg(error) FROM labels FINAL WHERE model = 'flowers' AND status = 'joined' "
            "AND event_time >= fromUnixTimestamp64Milli({change:Int64}) GROUP BY model_version ORDER BY model_version",
            {"change": EPOCH_MS + CHANGE_AT * SPACING_MS})
        by_version = dict(accuracy)
        assert by_version[1] < 0.5 and by_version[2] > 0.8
    finally:
        app.close()


# -- a champion trained elsewhere ----------------------------------------------------------

def test_a_champion_without_recipe_is_retrained_as_a_clone_of_its_own_pipeline(settings, small_windows):
    """Before the fix this request crashed the pipeline: ValueError: unknown estimator in recipe {}."""
    app = Embedded()
    try:
        frame, target = houses(1, 4000)
        numeric_only = FeatureContract(numeric=("floor_area", "rooms"), task="regression", classes=())
        pipeline = Pipeline([("scale", StandardScaler()), ("model", Ridge(alpha=3.0))]).fit(
            frame[["floor_area", "rooms"]], target)
        held_out, _ = houses(2, 2000)
        app.registry.register("houses", pipeline, numeric_only, actor="test", reason="trained elsewhere", recipe={},
                              profile=reference_profile(pipeline, numeric_only, held_out[["floor_area", "rooms"]]))
        app.registry.set_alias("houses", "champion", 1, actor="test", reason="first")
        stream(app, "houses", numeric_only, houses, seed=7)

        outcomes = retrain_outcomes(app)
        assert [o["outcome"] for o in outcomes] == ["promoted"], outcomes
        challenger = app.registry.load("houses", "champion")
        assert challenger.meta.version == 2 and challenger.meta.recipe == {}
        assert "clone" in challenger.meta.lineage["refit"]
        fitted = challenger.estimator
        assert [name for name, _ in fitted.steps] == ["scale", "model"]
        assert fitted.named_steps["model"].alpha == 3.0  # the champion's hyper-parameters, refitted
        assert fitted.named_steps["model"].coef_[0] > pipeline.named_steps["model"].coef_[0] * 1.5
    finally:
        app.close()


# -- ingest of numeric labels ------------------------------------------------------------------

def test_ingest_takes_numeric_labels_for_regression_and_refuses_what_cannot_be_a_value(settings):
    app = Embedded()
    try:
        register_champion(app, "houses", HOUSES, DEFAULT_REGRESSION_RECIPE, houses)
        register_champion(app, "flowers", FLOWERS, {"estimator": "logistic_regression"}, flowers)
        labels = [
            {"model": "houses", "event_id": "a", "value": 412.5},
            {"model": "houses", "event_id": "b", "label": "388.25"},  # a numeric label is taken as the value
            {"model": "houses", "event_id": "c", "value": math.nan},
            {"model": "houses", "event_id": "d", "value": math.inf},
            {"model": "houses", "event_id": "e", "label": "expensive"},
            {"model": "flowers", "event_id": "f", "label": "iris_a", "value": 1.0},
            {"model": "flowers", "event_id": "g", "label": "iris_b"},
        ]
        result = app.ingest.submit(LABELS, labels)
        assert sorted(result.accepted) == [0, 1, 6]
        reasons = {r.index: r.reason for r in result.rejected}
        assert "finite" in reasons[2] and "finite" in reasons[3]
        assert "regression model" in reasons[4] and "'value'" in reasons[4]
        assert "classification model" in reasons[5] and "'label'" in reasons[5]
        app.pump()
        _, rows = app.store.query("SELECT event_id, label, value FROM labels FINAL ORDER BY event_id")
        assert rows == [("a", "412.5", 412.5), ("b", "388.25", 388.25), ("g", "iris_b", None)]
        assert app.store.scalar("SELECT count() FROM dead_letters FINAL") == 4  # nothing lost
    finally:
        app.close()


def test_a_recipe_must_fit_the_task():
    with pytest.raises(ValueError, match="does not fit a regression contract"):
        build_pipeline({"estimator": "logistic_regression"}, HOUSES)
    with pytest.raises(ValueError, match="does not fit a classification contract"):
        build_pipeline({"estimator": "ridge"}, FLOWERS)


# -- the wire: regression records are plain Confluent Avro of the existing schemas -----------

def test_regression_records_round_trip_in_confluent_avro_with_the_unchanged_schemas():
    """No schema change was needed (score holds the value, Label.value the truth): old readers still read them."""
    codec = Codec(registry_client(None))
    t = EPOCH_MS
    prediction = {"prediction_id": "h1:1:champion", "event_id": "h1", "entity_id": "e1", "model": "houses",
                  "model_version": 1, "role": "champion", "score": 412.5, "scores": {}, "predicted_label": "412.5",
                  "numeric_features": {"floor_area": 120.0}, "categorical_features": {"district": "hill"},
                  "event_time": t, "prediction_time": t + 5}
    label = {"model": "houses", "event_id": "h1", "label": "400.0", "value": 400.0, "label_time": t + 9}
    for topic, record in (("predictions", prediction), ("labels", label)):
        data = codec.encode(topic, record)
        assert data[0] == 0  # Confluent wire format: magic byte, schema id, Avro body
        field = "score" if topic == "predictions" else "value"
        assert codec.decode(topic, data)[field] == record[field]
    # an outside consumer with only the .avsc file reads the body after the 5-byte header
    schema = fastavro.parse_schema(json.loads((Path(__file__).parents[2] / "schemas" / "Prediction.avsc").read_text()))
    body = codec.encode("predictions", prediction)[5:]
    assert fastavro.schemaless_reader(io.BytesIO(body), schema)["score"] == 412.5


# -- pure logic: the gate metric and the detector of a regression error stream ----------------

def _loaded(estimator, contract, recipe):
    from driftline.registry import LoadedModel

    class Meta:  # the fields the retrainer reads of a ModelVersion
        pass

    meta = Meta()
    meta.contract, meta.recipe, meta.version = contract, recipe, 1
    return LoadedModel(meta, estimator)


def test_the_gate_uses_a_configured_metric_and_refuses_one_the_task_lacks():
    from driftline.services.retrainer.logic import LabelledData, Retrainer

    old, old_target = houses(1, 3000)
    frame, target = houses(3, 3000, changed=True)  # the concept has changed since the champion was trained
    champion = train(DEFAULT_REGRESSION_RECIPE, HOUSES, old, old_target).estimator
    data = LabelledData(frame, target, np.arange(3000, dtype=np.int64), sql="")
    verdict = Retrainer(min_rows=1000, metric="rmse").evaluate(data, _loaded(champion, HOUSES, DEFAULT_REGRESSION_RECIPE))
    assert verdict.promote and "challenger rmse" in verdict.reason
    assert verdict.metrics["holdout_rmse"] < verdict.metrics["champion_holdout_rmse"]
    with pytest.raises(ValueError, match="gate metric 'accuracy' is not available for a regression model"):
        Retrainer(min_rows=1000, metric="accuracy").evaluate(data, _loaded(champion, HOUSES, DEFAULT_REGRESSION_RECIPE))
    with pytest.raises(ValueError, match="unknown retrain metric"):
        Retrainer(metric="r2")


def test_a_binary_only_detector_configured_for_a_regression_model_falls_back_to_adwin():
    from driftline.drift import AlertPolicy, ReferenceProfile, WindowSpec
    from driftline.services.drift_detector.logic import DriftDetector

    rng = np.random.default_rng(0)
    profile = ReferenceProfile.fit(numeric={"floor_area": rng.uniform(40, 200, 2000)}, categorical={},
                                   score=rng.normal(400, 50, 2000))
    detector = DriftDetector(lambda model, version: profile, WindowSpec(size=10_000), AlertPolicy(),
                             concept_method={"houses": "DDM"})
    errors = np.concatenate([np.abs(rng.normal(0, 10, 3000)), np.abs(rng.normal(0, 80, 3000))])
    labeled = [{"model": "houses", "event_id": f"h{i}", "model_version": 1, "role": "champion", "error": float(e),
                "event_time": EPOCH_MS + i * SPACING_MS, "label_time": EPOCH_MS + i * SPACING_MS + 5}
               for i, e in enumerate(errors)]
    out = detector.observe_labeled(labeled, now_ms=EPOCH_MS)
    concept = [s for s in out.signals if s["kind"] == "concept"]
    assert concept and all(s["statistic"] == "ADWIN" for s in concept)
    assert min(s["stream_index"] for s in concept) >= 3000  # the jump in absolute error, not before it
    # ... and the detection is placed at the event time of the labeled record that fired it
    assert all(s["window_start"] == s["window_end"] == s["event_time"] == EPOCH_MS + s["stream_index"] * SPACING_MS
               for s in concept)
    assert len(out.requests) == 1
