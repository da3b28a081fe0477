"""Ingest's errors teach: an unknown field or feature names the expected ones; a model without champion says
how to register one."""

from __future__ import annotations

from driftline.contract import FeatureContract
from driftline.services.ingest.body import RawRecord
from driftline.services.ingest.logic import Ingest

CONTRACT = FeatureContract(numeric=("pressure", "flow"), categorical=("site",))
EVENT = {"model": "pumps", "event_id": "e1", "entity_id": "p1", "event_time": 1_700_000_000_000,
         "numeric_features": {"pressure": 1.0, "flow": 2.0}, "categorical_features": {"site": "a"}}


def reasons(*records) -> list[str]:
    ingest = Ingest(lambda m: CONTRACT if m == "pumps" else None, clock=lambda: 1_700_000_000_000)
    return [r.reason for r in ingest.events([RawRecord(i, r) for i, r in enumerate(records)]).rejected]


def test_an_unknown_field_names_the_fields_of_an_event():
    wrong = {k: v for k, v in EVENT.items() if k != "numeric_features"} | {"numeric": {"pressure": 1.0}}
    (reason,) = reasons(wrong)
    assert reason.startswith("numeric: unknown field; did you mean 'numeric_features'?")
    assert "model, event_id, entity_id, event_time (required) and numeric_features, categorical_features" in reason
    label = Ingest(lambda m: None).labels([RawRecord(0, {"model": "m", "event_id": "e", "label": "1", "lable": 1})])
    assert "did you mean 'label'? a label has the fields model, event_id (required) and label, value" in label.rejected[0].reason


def test_an_unknown_feature_names_the_models_features():
    (reason,) = reasons(EVENT | {"numeric_features": {"pressure": 1.0, "flow": 2.0, "flw": 3.0}})
    assert reason == ("numeric_features.flw: not a numeric feature of this model; did you mean 'flow'? model 'pumps' "
                      "reads numeric features pressure, flow and categorical features site")
    (moved,) = reasons(EVENT | {"numeric_features": {"pressure": 1.0, "flow": 2.0, "site": 1.0}})
    assert moved.endswith("not a numeric feature of this model (it is categorical)")  # known: no list needed


def test_a_model_without_champion_says_how_to_register_one():
    (reason,) = reasons(EVENT | {"model": "turbines"})
    assert "model 'turbines' has no champion" in reason
    assert "driftline model register turbines --data FILE --target COL --champion" in reason
