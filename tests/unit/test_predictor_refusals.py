"""The predictor's logic refuses per model version and per event, and never raises for either."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.contract import FeatureContract
from driftline.failure import DependencyUnavailable
from driftline.registry import LoadedModel
from driftline.registry.core import ModelVersion
from driftline.services.predictor.logic import FLOAT32_MAX, ModelRefused, Predictor
from driftline.services.predictor.service import MODEL_LOAD_FAILED, PredictorService
from driftline.telemetry import BAD_FEATURES, MODEL_LOAD_FAILURES, SCORING_FAILED, UNSCORABLE

CONTRACT = FeatureContract(numeric=("vibration",))


class Threshold:
    """A classifier: P(alarm) = 1 if vibration > 1; raises on a vibration of exactly 13 (a model bug)."""

    classes_ = np.array(["ok", "alarm"])

    def predict_proba(self, frame):
        values = frame["vibration"].to_numpy()
        if (values == 13).any():
            raise ValueError("unlucky vibration")
        alarm = (values > 1).astype(float)
        return np.column_stack([1 - alarm, alarm])


def loaded(version: int) -> LoadedModel:
    return LoadedModel(ModelVersion("fan", version, "0" * 64, 0, "test", CONTRACT), Threshold())


def event(i: int, vibration: float) -> dict:
    return {"model": "fan", "event_id": f"e{i}", "entity_id": "x", "event_time": 0,
            "numeric_features": {"vibration": vibration}, "categorical_features": {}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loads:
    """A loader answering from a list: a LoadedModel, None, or an exception to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, model, alias):
        if alias != "champion":
            return None
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def tampered(version: int) -> ModelRefused:
    return ModelRefused("fan", "champion", version, "TamperedArtifact: sha256 is abc, the registry recorded def")


def test_a_first_load_refused_dead_letters_with_the_reason_and_retries_after_the_backoff():
    clock = Clock()
    loads = Loads(tampered(1), loaded(2))
    predictor = Predictor(loads, retry_after_s=30, clock=clock)
    predictions, unscorable = predictor.predict([event(0, 2.0), event(1, 0.0)])
    assert predictions == []
    assert {(u.reason, u.category) for u in unscorable} == {
        ("model 'fan' champion v1 refused: TamperedArtifact: sha256 is abc, the registry recorded def", UNSCORABLE)}
    assert [(r.model, r.alias, r.version) for r in predictor.take_refusals()] == [("fan", "champion", 1)]
    predictor.predict([event(2, 2.0)])
    assert loads.calls == 1  # within the back-off: not loaded again
    clock.now = 31
    predictions, unscorable = predictor.predict([event(3, 2.0)])
    assert [(p["event_id"], p["model_version"]) for p in predictions] == [("e3", 2)] and unscorable == []


def test_a_refused_promotion_keeps_the_good_version_and_a_model_event_retries_at_once():
    loads = Loads(loaded(1), tampered(2), tampered(2), loaded(3))
    predictor = Predictor(loads, retry_after_s=3600, clock=Clock())
    assert predictor.predict([event(0, 2.0)])[0][0]["model_version"] == 1
    predictor.on_model_event({"model": "fan", "alias": "champion", "version": 2})
    predictions, unscorable = predictor.predict([event(1, 2.0)])
    assert [p["model_version"] for p in predictions] == [1] and unscorable == []
    assert len(predictor.take_refusals()) == 1
    predictor.on_model_event({"model": "fan", "alias": "champion", "version": 2})  # the same event replayed
    predictor.predict([event(2, 2.0)])
    assert predictor.take_refusals() == []  # the same refusal is reported once
    predictor.on_model_event({"model": "fan", "alias": "champion", "version": 3})
    assert predictor.predict([event(3, 2.0)])[0][0]["model_version"] == 3
    assert predictor.refusal("fan", "champion") is None


def test_a_restart_falls_back_on_an_earlier_version_that_loads():
    asked = []

    def fallback(model, alias, refused):
        asked.append(refused)
        return loaded(1)

    predictor = Predictor(Loads(tampered(2)), fallback=fallback, clock=Clock())
    predictions, unscorable = predictor.predict([event(0, 2.0)])
    assert [p["model_version"] for p in predictions] == [1] and unscorable == [] and asked == [2]
    assert len(predictor.take_refusals()) == 1  # still reported


def test_a_registry_that_cannot_be_reached_is_not_a_refusal():
    with pytest.raises(DependencyUnavailable):
        Predictor(Loads(DependencyUnavailable("registry: connection refused")), clock=Clock()).predict([event(0, 1.0)])
    predictor = Predictor(Loads(loaded(1), DependencyUnavailable("registry down"), loaded(2)), clock=Clock())
    predictor.predict([event(0, 1.0)])
    predictor.on_model_event({"model": "fan", "alias": "champion", "version": 2})
    assert predictor.predict([event(1, 1.0)])[0][0]["model_version"] == 1  # kept, not refused
    assert predictor.take_refusals() == []
    assert predictor.predict([event(2, 1.0)])[0][0]["model_version"] == 2  # retried on the next batch


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e308, -1e39, FLOAT32_MAX * 1.01])
def test_a_feature_no_model_can_compute_with_is_refused_alone(value):
    predictor = Predictor(Loads(loaded(1)), clock=Clock())
    batch = [event(i, 2.0) for i in range(5)] + [event(5, value)] + [event(6, math.nan)]
    predictions, unscorable = predictor.predict(batch)
    assert sorted(p["event_id"] for p in predictions) == ["e0", "e1", "e2", "e3", "e4", "e6"]  # NaN: missing
    [(bad, reason, category)] = unscorable
    assert bad["event_id"] == "e5" and category == BAD_FEATURES and "feature 'vibration'" in reason


def test_an_event_the_model_raises_on_fails_alone():
    predictor = Predictor(Loads(loaded(1)), clock=Clock())
    predictions, unscorable = predictor.predict([event(0, 2.0), event(1, 13.0), event(2, 0.5)])
    assert sorted(p["event_id"] for p in predictions) == ["e0", "e2"]
    [(bad, reason, category)] = unscorable
    assert bad["event_id"] == "e1" and category == SCORING_FAILED
    assert reason == "fan v1 could not score it: ValueError: unlucky vibration"


class RecordingRegistry:
    def __init__(self, failures: list[Exception]):
        self.failures = failures
        self.rows = []

    def record(self, model, version, action, *, actor, reason):
        if self.failures:
            raise self.failures.pop(0)
        self.rows.append((model, version, action, actor))


def test_the_service_reports_a_refusal_once_as_metric_and_audit_row_even_through_a_registry_outage():
    registry = RecordingRegistry([DependencyUnavailable("registry away")])
    service = PredictorService(Predictor(Loads(tampered(4)), clock=Clock()), registry)
    counter = MODEL_LOAD_FAILURES.labels("predictor", "fan", "champion")
    before = counter._value.get()
    service.handle([], 0)
    service.predictor.predict([event(0, 1.0)])
    service._report_refusals()  # the registry is away: the row waits
    assert registry.rows == [] and counter._value.get() == before + 1
    service._report_refusals()
    assert registry.rows == [("fan", 4, MODEL_LOAD_FAILED, "predictor")]
    service._report_refusals()
    assert len(registry.rows) == 1 and counter._value.get() == before + 1
