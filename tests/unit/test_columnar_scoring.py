"""The predictor scores driftline's own pipelines on numpy columns (issue 12): the same scores,
bit for bit, as the DataFrame through scikit-learn, on data that is not the demo's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftline.contract import FeatureContract
from driftline.model_input import ColumnarInput
from driftline.models import build_pipeline, string_columns, to_frame
from driftline.registry import LoadedModel
from driftline.registry.core import ModelVersion
from driftline.services.predictor.logic import FLOAT32_MAX, Predictor, feature_problem

NUMERIC = ("rpm", "oil_temp", "vibration")
CATEGORICAL = ("site", "gearbox")
SITES, GEARBOXES = ["north", "south", "east"], ["planetary", "helical"]


def _training(task: str, rows: int = 600, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"rpm": rng.normal(1500, 200, rows), "oil_temp": rng.normal(70, 8, rows),
                          "vibration": rng.gamma(2.0, 1.0, rows), "site": rng.choice(SITES, rows),
                          "gearbox": rng.choice(GEARBOXES, rows)})
    frame.loc[rng.random(rows) < 0.1, "oil_temp"] = np.nan  # the imputer's median matters
    signal = frame["vibration"] + (frame["site"] == "north") * 0.8 + rng.normal(0, 0.5, rows)
    if task == "regression":
        return frame, signal.to_numpy()
    if task == "multiclass":
        return frame, np.array(["low", "mid", "high"])[np.digitize(signal, [1.5, 3.0])]
    return frame, np.where(signal > 2.5, "wear", "fine")


def _events(n: int, seed: int = 11) -> list[dict]:
    """Stream events with what training never saw: unknown categories, missing and absent values."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        numeric = {"rpm": float(rng.normal(1500, 300)), "oil_temp": float(rng.normal(72, 10)),
                   "vibration": float(rng.gamma(2.0, 1.2))}
        categorical = {"site": str(rng.choice(SITES + ["west"])), "gearbox": str(rng.choice(GEARBOXES))}
        if i % 7 == 0:
            numeric["oil_temp"] = float("nan")
        if i % 11 == 0:
            del numeric["vibration"]  # an optional feature absent: a missing value
        if i % 13 == 0:
            del categorical["gearbox"]
        events.append({"model": "gearbox", "event_id": f"g{i}", "entity_id": f"turbine-{i % 9}",
                       "event_time": 1_700_000_000_000 + i, "numeric_features": numeric,
                       "categorical_features": categorical})
    return events


def _contract(task: str, classes: tuple[str, ...]) -> FeatureContract:
    return FeatureContract(numeric=NUMERIC, categorical=CATEGORICAL, classes=classes,
                           task="regression" if task == "regression" else "classification",
                           optional=("vibration", "gearbox"))


def _reference(estimator, contract: FeatureContract, events: list[dict], task: str) -> np.ndarray:
    """Today's path: a DataFrame through the whole scikit-learn pipeline."""
    frame = to_frame(contract, [e["numeric_features"] for e in events], [e["categorical_features"] for e in events],
                     estimator)
    if task == "regression":
        return np.asarray(estimator.predict(frame), dtype=np.float64)
    return estimator.predict_proba(frame)


@pytest.mark.parametrize("task,recipe", [
    ("binary", {"estimator": "logistic_regression", "params": {"C": 0.3, "max_iter": 500}}),
    ("multiclass", {"estimator": "logistic_regression", "params": {"max_iter": 500}}),
    ("binary", {"estimator": "hist_gradient_boosting", "params": {"max_iter": 5}}),
    ("multiclass", {"estimator": "random_forest", "params": {"n_estimators": 10, "random_state": 0}}),
    ("regression", {"estimator": "ridge", "params": {"alpha": 2.0}}),
    ("regression", {"estimator": "hist_gradient_boosting_regressor", "params": {"max_iter": 5}}),
])
def test_columnar_scores_equal_the_pipeline_on_a_dataframe(task, recipe):
    frame, target = _training(task)
    classes = tuple(sorted({str(t) for t in target})) if task != "regression" else ()
    contract = _contract(task, classes)
    estimator = build_pipeline(recipe, contract).fit(frame, target)
    events = _events(300)
    columnar = ColumnarInput.of(estimator, contract)
    assert columnar is not None  # driftline's own pipeline: scored without a DataFrame

    predictor = Predictor(lambda model, alias: LoadedModel(ModelVersion("gearbox", 4, "0" * 64, 0, "t", contract),
                                                           estimator) if alias == "champion" else None)
    predictions, unscorable = predictor.predict(events)
    assert unscorable == []
    expected = _reference(estimator, contract, events, task)
    assert [p["event_id"] for p in predictions] == [e["event_id"] for e in events]
    if task == "regression":
        assert [p["score"] for p in predictions] == expected.tolist()  # exactly, not approximately
        assert [p["predicted_label"] for p in predictions] == [repr(v) for v in expected.tolist()]
    else:
        names = [str(c) for c in estimator.classes_]
        assert [p["scores"] for p in predictions] == [dict(zip(names, row)) for row in expected.tolist()]
        assert [p["predicted_label"] for p in predictions] == [names[k] for k in expected.argmax(axis=1)]
    assert predictions[0]["numeric_features"] is events[0]["numeric_features"]  # what was scored, unchanged


def test_a_pipeline_of_another_shape_is_scored_through_scikit_learn():
    contract = FeatureContract(numeric=("rpm", "oil_temp"))
    frame, target = _training("binary")
    outside = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame[["oil_temp", "rpm"]].fillna(70), target)
    assert ColumnarInput.of(outside, contract) is None  # not a ColumnTransformer pipeline: no shortcut
    events = [e for e in _events(40) if "vibration" in e["numeric_features"]]
    for e in events:
        e["numeric_features"]["oil_temp"] = 70.0 if np.isnan(e["numeric_features"]["oil_temp"]) else e["numeric_features"]["oil_temp"]
    predictor = Predictor(lambda model, alias: LoadedModel(ModelVersion("gearbox", 1, "0" * 64, 0, "t", contract),
                                                           outside) if alias == "champion" else None)
    predictions, unscorable = predictor.predict(events)
    assert unscorable == []
    expected = outside.predict_proba(to_frame(contract, [e["numeric_features"] for e in events], [{}] * len(events),
                                              outside))
    assert [p["score"] for p in predictions] == expected[:, 1].tolist()


def test_bad_numbers_are_found_per_event_with_the_message_of_one_by_one():
    frame, target = _training("binary")
    contract = _contract("binary", ("fine", "wear"))
    estimator = build_pipeline({"estimator": "logistic_regression", "params": {}}, contract).fit(frame, target)
    events = _events(50)
    events[3]["numeric_features"]["rpm"] = float("inf")
    events[8]["numeric_features"]["oil_temp"] = -1e300
    events[9]["numeric_features"]["torque"] = float("-inf")  # not in the contract: still refused, as before
    events[20]["numeric_features"]["rpm"] = FLOAT32_MAX  # the largest float32 itself is fine
    predictor = Predictor(lambda model, alias: LoadedModel(ModelVersion("gearbox", 1, "0" * 64, 0, "t", contract),
                                                           estimator) if alias == "champion" else None)
    predictions, unscorable = predictor.predict(events)
    assert {u.event["event_id"]: u.reason for u in unscorable} == {
        e["event_id"]: feature_problem(e["numeric_features"]) for e in (events[3], events[8], events[9])}
    assert "'rpm' is inf" in unscorable[0].reason
    assert len(predictions) == 47


def test_events_with_many_names_outside_the_contract_are_scored_without_a_column_per_name():
    """Found at review: the batch's range check built an events x (every numeric name seen)
    matrix. Avro written straight to the topic skips ingest's contract check, so 1,000 events
    with 50 names of their own each would have made a 1,000 x 50,000 matrix (400 MB)."""
    import tracemalloc

    frame, target = _training("binary")
    contract = _contract("binary", ("fine", "wear"))
    estimator = build_pipeline({"estimator": "logistic_regression", "params": {}}, contract).fit(frame, target)
    events = _events(1000)
    for i, event in enumerate(events):
        event["numeric_features"].update({f"sensor_{i}_{j}": float(j) for j in range(50)})
    events[500]["numeric_features"]["sensor_500_7"] = 1e300  # still found, whatever its name
    predictor = Predictor(lambda model, alias: LoadedModel(ModelVersion("gearbox", 1, "0" * 64, 0, "t", contract),
                                                           estimator) if alias == "champion" else None)
    predictor.predict(events[:10])  # warm: the model's columnar form is built once
    tracemalloc.start()
    predictions, unscorable = predictor.predict(events)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [u.event["event_id"] for u in unscorable] == ["g500"] and "'sensor_500_7'" in unscorable[0].reason
    assert len(predictions) == 999
    assert peak < 50e6  # a 1,000 x 50,000 float64 matrix alone is 400 MB


def test_string_columns_fill_absent_categories_with_the_empty_string():
    rows = [{"site": "north", "gearbox": "helical"}, {"site": "south"}]
    assert string_columns(rows, ("site", "gearbox")) == {"site": ["north", "south"], "gearbox": ["helical", ""]}
    assert string_columns(rows[:1], ("site",)) == {"site": ["north"]}
    assert string_columns([], ("site", "gearbox")) == {"site": [], "gearbox": []}


class _Picky:
    """A classifier on ``rpm`` that raises for an rpm of exactly 13 (a model bug)."""

    classes_ = np.array(["fine", "wear"])

    def predict_proba(self, frame):
        rpm = frame["rpm"].to_numpy()
        if (rpm == 13).any():
            raise ValueError("unlucky rpm")
        wear = (rpm > 1500).astype(float)
        return np.column_stack([1 - wear, wear])


def test_the_shadow_scores_exactly_the_events_the_champion_served():
    contract = FeatureContract(numeric=("rpm",))
    models = {role: LoadedModel(ModelVersion("gearbox", version, "0" * 64, 0, "t", contract), _Picky())
              for role, version in (("champion", 2), ("shadow", 3))}
    events = [{"model": "gearbox", "event_id": f"g{i}", "entity_id": "t", "event_time": i,
               "numeric_features": {"rpm": rpm}, "categorical_features": {}}
              for i, rpm in enumerate([1000.0, 13.0, 2000.0, float("inf"), 1600.0])]
    predictions, unscorable = Predictor(lambda model, alias: models[alias]).predict(events)
    assert sorted((u.event["event_id"], u.category) for u in unscorable) == [("g1", "scoring_failed"),
                                                                             ("g3", "bad_features")]
    by_role = {role: [p["event_id"] for p in predictions if p["role"] == role] for role in ("champion", "shadow")}
    assert by_role == {"champion": ["g0", "g2", "g4"], "shadow": ["g0", "g2", "g4"]}
    assert [p["score"] for p in predictions if p["role"] == "shadow"] == [0.0, 1.0, 1.0]


def test_a_pipeline_that_drops_a_feature_still_scores_the_same():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, target = _training("binary")
    contract = _contract("binary", ("fine", "wear"))
    columns = ColumnTransformer([("numeric", make_pipeline(SimpleImputer(), StandardScaler()), ["vibration", "rpm"]),
                                 ("categorical", OneHotEncoder(handle_unknown="ignore"), ["site"])])  # the rest dropped
    estimator = Pipeline([("features", columns), ("model", LogisticRegression())]).fit(frame, target)
    assert ColumnarInput.of(estimator, contract) is not None  # the dropped remainder adds no column
    events = _events(100)
    predictor = Predictor(lambda model, alias: LoadedModel(ModelVersion("gearbox", 1, "0" * 64, 0, "t", contract),
                                                           estimator) if alias == "champion" else None)
    predictions, _ = predictor.predict(events)
    assert [p["score"] for p in predictions] == _reference(estimator, contract, events, "binary")[:, 1].tolist()

