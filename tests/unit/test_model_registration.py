"""The pure logic under ``driftline model register``: table files, contract inference, holdout profiles,
and the registry refusing a champion without a reference profile (library and HTTP)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.contract_inference import ContractInference
from driftline.drift.profile import ReferenceProfile
from driftline.datasets import UnreadableTable, read_table
from driftline.models import DEFAULT_RECIPE
from driftline.registration import from_table, holdout_split
from driftline.registry import MonitoringRequired
from driftline.services.registry.app import create_app

TOKEN = "unit-token"


def sensors(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c"], rows)
    heat = rng.normal(50, 10, rows)
    return pd.DataFrame({"id": np.arange(rows), "event_time": pd.date_range("2026-01-01", periods=rows, freq="s"),
                         "heat": heat, "code": rng.integers(0, 3, rows), "site": site,
                         "fault": (heat + np.where(site == "a", 8, 0) > 55).astype(float)})


def test_columns_get_roles_and_classes_read_as_the_predictor_reports_them():
    frame = sensors()
    inference = ContractInference(target="fault", categorical=["code"]).fit(frame)
    contract = inference.contract_
    assert contract.numeric == ("heat",) and contract.categorical == ("code", "site")
    assert contract.classes == ("0", "1")  # 0.0 / 1.0 floats are the classes "0" and "1"
    assert inference.not_features_ == {"fault": "target", "id": "id", "event_time": "time"}
    features = inference.features(frame)
    assert list(features.columns) == ["heat", "code", "site"] and features["code"].iloc[0] in {"0", "1", "2"}


def test_contract_inference_names_what_is_wrong():
    frame = sensors()
    with pytest.raises(ValueError, match=r"--ignore names 'colour'.*its columns are: id, event_time"):
        ContractInference(target="fault", ignore=["colour"]).fit(frame)
    with pytest.raises(ValueError, match="column 'site' is numeric but has the value"):
        ContractInference(target="fault", numeric=["site"]).fit(frame)
    with pytest.raises(ValueError, match="one value only"):
        ContractInference(target="fault").fit(frame.assign(fault=1.0))


def test_the_profile_comes_from_rows_the_model_did_not_train_on(tmp_path):
    frame = sensors(1000)
    path = tmp_path / "sensors.parquet"
    frame.to_parquet(path)
    table, source = read_table(path)
    prepared = from_table(table, source, ContractInference(target="fault"), DEFAULT_RECIPE, holdout_fraction=0.2)
    assert prepared.lineage["train_rows"] == 800 and prepared.lineage["profile_rows"] == 200
    profiled = {f["name"]: f for f in prepared.profile["features"]}
    assert set(profiled) == {"heat", "code", "site", "__score__"}
    assert {f["n_reference"] for f in profiled.values()} == {200}
    assert prepared.metrics["rows"] == 200 and prepared.metrics["evaluated_on"] == "holdout"
    train, held = holdout_split(table, ContractInference(target="fault").fit(table).labels(table), 0.2, 0, True)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 1000


def test_unreadable_files_say_which_formats_are_accepted(tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(UnreadableTable, match=r"unknown file type '.xlsx'.*CSV \(.csv\), Parquet"):
        read_table(tmp_path / "x.xlsx")
    (tmp_path / "x.jsonl").write_text("{not json\n")
    with pytest.raises(UnreadableTable, match="cannot read it as jsonl"):
        read_table(tmp_path / "x.jsonl")


def fitted():
    return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"])


def test_a_champion_without_a_profile_needs_no_monitoring(registry):
    contract = FeatureContract(numeric=("x",))
    registry.register("m", fitted(), contract, actor="a")
    profile = ReferenceProfile.fit(numeric={"x": np.arange(10.0)}, score=np.linspace(0, 1, 10)).to_dict()
    registry.register("m", fitted(), contract, actor="a", profile=profile)
    with pytest.raises(MonitoringRequired, match="no reference profile"):
        registry.set_alias("m", "champion", 1, actor="a", reason="go")
    registry.set_alias("m", "shadow", 1, actor="a", reason="other aliases need no profile")
    registry.set_alias("m", "champion", 2, actor="a", reason="profiled")
    event = registry.set_alias("m", "champion", 1, actor="a", reason="risk taken", no_monitoring=True)
    assert event["reason"].startswith("risk taken") and "no monitoring" in event["reason"]
    assert registry.aliases("m") == {"champion": 1, "shadow": 1}

    # Over HTTP: 409 without the flag, nothing written; accepted with it.
    http = TestClient(create_app(registry, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    before = len(registry.audit_log())
    refused = http.put("/v1/models/m/aliases/champion", json={"version": 1, "actor": "a", "reason": "r"})
    assert refused.status_code == 409 and "no_monitoring" in refused.json()["detail"]
    assert len(registry.audit_log()) == before
    accepted = http.put("/v1/models/m/aliases/champion",
                        json={"version": 1, "actor": "a", "reason": "r", "no_monitoring": True})
    assert accepted.status_code == 200 and "no monitoring" in accepted.json()["reason"]
