"""``driftline model ...`` and ``driftline report`` as a user types them: subprocesses, real files, real HTTP.

The data is a churn table, not the demo's credit data: other feature names, a
categorical feature (``plan``), string classes (``yes`` / ``no``) and an id column.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftline.registry import Registry
from driftline.services.registry.app import create_app
from driftline.testing.served import ServedApp

# The console script a user types, from the environment running the tests.
DRIFTLINE = [str(Path(sys.executable).with_name("driftline"))]
TOKEN = "model-cli-test-token"


def churn_table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], rows)
    tenure = rng.integers(1, 72, rows).astype(float)
    spend = rng.gamma(2.0, 30.0, rows)
    logit = -0.05 * tenure + 0.015 * spend + np.where(plan == "basic", 1.0, -0.5)
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame({"customer_id": np.arange(rows), "tenure_months": tenure, "monthly_spend": spend,
                          "plan": plan, "churned": churned})
    frame.loc[::40, "monthly_spend"] = np.nan  # a feature that may be missing
    return frame


def run(home: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    environment.update({"DRIFTLINE_HOME": str(home), **(env or {})})
    done = subprocess.run(DRIFTLINE + list(args), capture_output=True, text=True, env=environment, cwd=home.parent,
                          timeout=300)
    if ok:
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    else:
        assert done.returncode == 2, f"{args} should fail: rc {done.returncode}, {done.stdout}{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr
    return done


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    frame = churn_table(2000, seed=1)
    paths = {"csv": folder / "train.csv", "parquet": folder / "train.parquet", "jsonl": folder / "train.jsonl"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_json(paths["jsonl"], orient="records", lines=True)
    reference = churn_table(600, seed=2)
    reference.to_csv(folder / "reference.csv", index=False)
    reference.drop(columns=["customer_id"]).assign(region="north").to_csv(folder / "reference_extra.csv", index=False)
    reference.drop(columns=["plan"]).to_csv(folder / "reference_missing.csv", index=False)
    # A pipeline trained elsewhere, saved with skops.
    features = ["tenure_months", "monthly_spend", "plan"]
    other = churn_table(1500, seed=3).fillna({"monthly_spend": 60.0})
    pipeline = Pipeline([
        ("columns", ColumnTransformer([("numbers", StandardScaler(), ["tenure_months", "monthly_spend"]),
                                       ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])])),
        ("model", LogisticRegression(max_iter=500)),
    ]).fit(other[features], other["churned"])
    sio.dump(pipeline, folder / "model.skops")
    reference.fillna({"monthly_spend": 60.0}).to_csv(folder / "reference_filled.csv", index=False)
    paths.update(reference=folder / "reference.csv", extra=folder / "reference_extra.csv",
                 missing=folder / "reference_missing.csv", filled=folder / "reference_filled.csv",
                 artifact=folder / "model.skops")
    return paths


def audit(home: Path) -> list[dict]:
    registry = Registry(home / "registry")
    try:
        return registry.audit_log()
    finally:
        registry.close()


def test_register_from_csv_parquet_and_json_lines_then_list_show_promote_rollback_card(tables, tmp_path):
    home = tmp_path / "home"
    done = run(home, "model", "register", "churn", "--data", str(tables["csv"]), "--target", "churned",
               "--ignore", "customer_id", "--champion", "--reason", "first churn model", "--json")
    first = json.loads(done.stdout)
    assert first["version"] == 1 and first["champion"] is True
    contract = first["contract"]
    assert contract["numeric"] == ["tenure_months", "monthly_spend"] and contract["categorical"] == ["plan"]
    assert contract["classes"] == ["no", "yes"] and contract["optional"] == ["monthly_spend"]
    lineage = first["lineage"]
    assert lineage["data"] == {"file": "train.csv", "format": "csv", "sha256": sha256_of(tables["csv"]), "rows": 2000,
                               "columns": ["customer_id", "tenure_months", "monthly_spend", "plan", "churned"]}
    assert lineage["not_features"] == {"churned": "target", "customer_id": "ignored"}
    # The profile and the metrics come from the 25 % the model did not train on.
    assert lineage["train_rows"] == 1500 and lineage["profile_rows"] == 500
    assert set(first["profiled"]) >= {"tenure_months", "monthly_spend", "plan"}
    assert first["metrics"]["evaluated_on"] == "holdout" and first["metrics"]["rows"] == 500
    assert 0.5 < first["metrics"]["accuracy"] <= 1.0

    second = json.loads(run(home, "model", "register", "churn", "--data", str(tables["parquet"]), "--target",
                            "churned", "--id", "customer_id", "--estimator", "random_forest", "--reason", "a forest",
                            "--json").stdout)
    third = json.loads(run(home, "model", "register", "churn", "--data", str(tables["jsonl"]), "--target", "churned",
                           "--ignore", "customer_id", "--reason", "from json lines", "--json").stdout)
    assert (second["version"], third["version"]) == (2, 3) and not second["champion"]
    assert second["lineage"]["data"]["format"] == "parquet" and third["lineage"]["data"]["format"] == "jsonl"
    assert second["lineage"]["not_features"]["customer_id"] == "id"
    assert third["lineage"]["data"]["sha256"] == sha256_of(tables["jsonl"])
    assert third["contract"] == first["contract"]  # the same table in another format: the same contract

    listed = json.loads(run(home, "model", "list", "--json").stdout)
    assert listed == [{"model": "churn", "versions": 3, "latest": 3, "aliases": {"champion": 1}}]
    shown = json.loads(run(home, "model", "show", "churn", "2", "--json").stdout)
    assert shown["recipe"]["estimator"] == "random_forest" and shown["aliases"] == []
    table = run(home, "model", "show", "churn").stdout
    assert "v1" in table and "champion" in table and "3 versions" in table

    promoted = run(home, "model", "promote", "churn", "3", "--reason", "json lines model is better").stdout
    assert "churn champion: v1 -> v3" in promoted
    rolled = run(home, "model", "rollback", "churn", "--reason", "v3 misbehaves").stdout
    assert "churn champion: v3 -> v1" in rolled and "rolled back" in rolled
    card = run(home, "model", "card", "churn", "1").stdout
    assert card.startswith("# churn v1") and "first churn model" in card and "v3 misbehaves" in card
    assert sha256_of(tables["csv"]) in card  # lineage: the training file's hash

    rows = audit(home)
    assert [(r["action"], r["version"], r["reason"]) for r in rows] == [
        ("registered", 1, "first churn model"), ("alias_moved", 1, "first churn model"),
        ("registered", 2, "a forest"), ("registered", 3, "from json lines"),
        ("alias_moved", 3, "json lines model is better"), ("rolled_back", 1, "v3 misbehaves")]
    assert all(r["actor"].startswith("cli:") for r in rows)

    # `driftline report` without --model covers every model; an unknown one is named with those that exist.
    out = tmp_path / "report.html"
    assert "1 models: churn" in run(home, "report", "--out", str(out)).stdout
    page = out.read_text(encoding="utf-8")
    assert '<article id="model-churn">' in page and "<h3>PSI per feature over time</h3>" in page
    unknown = run(home, "report", "--model", "credit", "--out", str(out), ok=False)
    assert "no model 'credit'" in unknown.stderr and "models: churn" in unknown.stderr


def test_errors_name_what_to_fix_and_register_nothing(tables, tmp_path):
    home = tmp_path / "home"
    no_target = run(home, "model", "register", "churn", "--data", str(tables["csv"]), "--target", "left",
                    "--reason", "r", ok=False)
    assert "no target column 'left'" in no_target.stderr
    assert "customer_id, tenure_months, monthly_spend, plan, churned" in no_target.stderr
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    unreadable = run(home, "model", "register", "churn", "--data", str(text), "--target", "churned", "--reason", "r",
                     ok=False)
    assert "CSV (.csv), Parquet (.parquet, .pq) or JSON lines" in unreadable.stderr
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    assert "cannot read it as parquet" in run(home, "model", "register", "churn", "--data", str(broken), "--target",
                                              "churned", "--reason", "r", ok=False).stderr
    bad_name = run(home, "model", "register", "churn rate!", "--data", str(tables["csv"]), "--target", "churned",
                   "--reason", "r", ok=False)
    assert "not a valid model name" in bad_name.stderr and "[A-Za-z0-9]" in bad_name.stderr
    forced = run(home, "model", "register", "churn", "--data", str(tables["csv"]), "--target", "churned",
                 "--numeric", "plan", "--reason", "r", ok=False)
    assert "column 'plan' is numeric but has the value" in forced.stderr
    assert run(home, "model", "list", "--json").stdout.strip() == "[]"
    assert audit(home) == []


def test_an_artifact_trained_elsewhere_and_the_champion_without_a_profile(tables, tmp_path):
    home = tmp_path / "home"
    # The contract is checked against the pipeline's feature_names_in_.
    extra = run(home, "model", "register", "ext", "--artifact", str(tables["artifact"]), "--reference",
                str(tables["extra"]), "--target", "churned", "--reason", "r", ok=False)
    assert "has columns the pipeline does not read: region" in extra.stderr
    missing = run(home, "model", "register", "ext", "--artifact", str(tables["artifact"]), "--reference",
                  str(tables["missing"]), "--target", "churned", "--reason", "r", ok=False)
    assert "lacks the columns the pipeline reads: plan" in missing.stderr

    registered = json.loads(run(home, "model", "register", "ext", "--artifact", str(tables["artifact"]), "--reference",
                                str(tables["filled"]), "--target", "churned", "--id", "customer_id", "--champion",
                                "--reason", "trained by the data team", "--json").stdout)
    assert registered["version"] == 1 and registered["champion"]
    assert registered["contract"]["numeric"] == ["tenure_months", "monthly_spend"]
    assert registered["contract"]["categorical"] == ["plan"] and registered["contract"]["classes"] == ["no", "yes"]
    assert registered["lineage"]["origin"].startswith("external artifact")
    assert registered["lineage"]["artifact"]["sha256"] == sha256_of(tables["artifact"])
    assert registered["metrics"]["evaluated_on"] == "reference" and registered["metrics"]["rows"] == 600
    shown = json.loads(run(home, "model", "show", "ext", "1", "--json").stdout)
    assert shown["recipe"] == {"refit": "clone"} and shown["sha256"] == sha256_of(tables["artifact"])

    # Without reference data there is no profile: refused as champion, and nothing is registered.
    refused = run(home, "model", "register", "ext", "--artifact", str(tables["artifact"]), "--categorical", "plan",
                  "--champion", "--reason", "r", ok=False)
    assert "--no-monitoring" in refused.stderr and "Nothing was registered" in refused.stderr
    assert json.loads(run(home, "model", "list", "--json").stdout)[0]["versions"] == 1
    # Registered without --champion, then promoted: refused by the registry itself.
    run(home, "model", "register", "ext", "--artifact", str(tables["artifact"]), "--categorical", "plan",
        "--reason", "no reference at hand")
    promote = run(home, "model", "promote", "ext", "2", "--reason", "r", ok=False)
    assert "no reference profile" in promote.stderr and "--no-monitoring" in promote.stderr
    assert "ext champion: v1 -> v2" in run(home, "model", "promote", "ext", "2", "--no-monitoring", "--reason",
                                           "accepted risk").stdout
    last = audit(home)[-1]
    assert last["action"] == "alias_moved" and "accepted risk" in last["reason"] and "no monitoring" in last["reason"]


@pytest.fixture
def served_registry(tmp_path):
    """The registry API (uvicorn, free 127.0.0.1 port) over a registry in tmp; yields (url, registry)."""
    registry = Registry(tmp_path / "served-registry")
    served = ServedApp(create_app(registry, TOKEN))
    yield served.url, registry
    served.close()
    registry.close()


def test_the_same_commands_against_the_registry_api(tables, tmp_path, served_registry):
    url, registry = served_registry
    home = tmp_path / "home"  # must stay unused: everything goes over HTTP
    env = {"DRIFTLINE_REGISTRY_URL": url, "DRIFTLINE_REGISTRY_TOKEN": TOKEN}
    done = run(home, "model", "register", "churn", "--data", str(tables["csv"]), "--target", "churned", "--champion",
               "--reason", "over http", env=env)
    assert f"registered churn v1 in {url}" in done.stdout and "churn champion: none -> v1" in done.stdout
    run(home, "model", "register", "churn", "--artifact", str(tables["artifact"]), "--categorical", "plan",
        "--reason", "no profile", env=env)
    assert registry.aliases("churn") == {"champion": 1} and len(registry.versions("churn")) == 2

    refused = run(home, "model", "promote", "churn", "2", "--reason", "r", env=env, ok=False)
    assert "no reference profile" in refused.stderr
    assert "churn champion: v1 -> v2" in run(home, "model", "promote", "churn", "2", "--no-monitoring",
                                             "--reason", "accepted", env=env).stdout
    assert "churn champion: v2 -> v1" in run(home, "model", "rollback", "churn", "--reason", "back", env=env).stdout
    listed = json.loads(run(home, "model", "list", "--json", env=env).stdout)
    assert listed == [{"model": "churn", "versions": 2, "latest": 2, "aliases": {"champion": 1}}]
    assert "# churn v2" in run(home, "model", "card", "churn", "2", env=env).stdout
    assert [r["actor"].startswith("cli:") for r in registry.audit_log("churn")] == [True] * 5

    no_token = run(home, "model", "promote", "churn", "1", "--alias", "shadow", "--reason", "r",
                   env={"DRIFTLINE_REGISTRY_URL": url}, ok=False)
    assert "DRIFTLINE_REGISTRY_TOKEN" in no_token.stderr and "shadow" not in registry.aliases("churn")
    assert not (home / "registry").exists()
