"""A user's own model, start to finish, through the commands a user types.

Not the demo's data: a telecom churn model (other feature names, a categorical
feature whose live stream carries a category never seen in training) and, in a
second story, a delivery-time regression. Each story is

    driftline model register NAME --data train.csv --target COL --champion
    driftline up
    driftline send events part.csv ... / driftline send labels part.csv ...   (labels one part late)
    driftline sql "..."   and   GET /metrics

with an abrupt covariate shift and a concept change half-way through the
stream. It must end with exact counts, PSI ≥ 0.25 on the shifted feature in the
first full window after the shift, exactly one retrain request, a challenger
trained from the stored labels and promoted, and the quality per model version
by SQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_up import Up, free_port, wait_for

BIN = Path(sys.executable).parent
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPACING_MS = 10  # one event every 10 ms of event time
WINDOW_MS = 60_000  # the default drift window: 6,000 events
TOKEN = "own-model-registry-token"


@dataclass(frozen=True)
class Story:
    model: str
    target: str
    events: int
    shift_at: int
    parts: int
    shifted_feature: str

    @property
    def shift_ms(self) -> int:
        return EPOCH_MS + self.shift_at * SPACING_MS


def churn(n: int, seed: int, *, shifted: bool = False, live: bool = False) -> pd.DataFrame:
    """Churn of telecom customers; ``shifted`` moves monthly charges up and turns the concept around."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "monthly_charges": rng.normal(70, 15, n) + (45 if shifted else 0),
        "tenure_months": rng.gamma(2.0, 12.0, n),
        "support_calls": rng.poisson(1.5, n),
        "contract": rng.choice(["monthly", "annual", "two_year"], n, p=[0.5, 0.3, 0.2]),
    })
    if live:  # a plan launched after training: a category the model never saw
        frame.loc[rng.random(n) < 0.03, "contract"] = "weekly"
    base = 70 + (45 if shifted else 0)
    z = (0.05 * (frame["monthly_charges"] - base) - 0.06 * (frame["tenure_months"] - 24)
         + 0.7 * (frame["support_calls"] - 1.5) + 0.8 * (frame["contract"] == "monthly"))
    z = -z if shifted else z
    frame["churned"] = np.where(rng.random(n) < 1 / (1 + np.exp(-2.5 * z)), "yes", "no")
    return frame


def delivery(n: int, seed: int, *, shifted: bool = False, live: bool = False) -> pd.DataFrame:
    """Minutes a delivery takes; ``shifted`` makes routes longer and traffic matter three times as much."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "route_km": rng.gamma(3.0, 2.0, n) * (2.0 if shifted else 1.0),
        "parcels": rng.poisson(4, n),
        "traffic_index": rng.uniform(0, 1, n),
        "vehicle": rng.choice(["bike", "van", "car"], n),
    })
    if live:
        frame.loc[rng.random(n) < 0.03, "vehicle"] = "drone"
    traffic_weight = 45 if shifted else 15
    frame["minutes"] = (10 + 3 * frame["route_km"] + 1.5 * frame["parcels"]
                        + traffic_weight * frame["traffic_index"] + rng.normal(0, 3, n))
    return frame


def stream(story: Story, make) -> pd.DataFrame:
    before = make(story.shift_at, seed=11, live=True)
    after = make(story.events - story.shift_at, seed=12, shifted=True, live=True)
    frame = pd.concat([before, after], ignore_index=True)
    frame.insert(0, "event_time", EPOCH_MS + np.arange(story.events) * SPACING_MS)
    frame.insert(0, "event_id", [f"{story.model}-{i:07d}" for i in range(story.events)])
    return frame


def driftline(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "driftline"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"driftline {' '.join(args)}: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def sql(env: dict, query: str) -> list[dict]:
    return json.loads(driftline(env, "sql", query, "--format", "json").stdout)


def scalar(env: dict, query: str):
    (row,) = sql(env, query)
    (value,) = row.values()
    return value


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def run_story(story: Story, make, tmp_path: Path, register_args: list[str], label_args: list[str]) -> tuple[dict, str]:
    home = tmp_path / "home"
    env = {**os.environ, "DRIFTLINE_HOME": str(home), "DRIFTLINE_REGISTRY_TOKEN": TOKEN}
    env.pop("DRIFTLINE_STORE_DSN", None)
    env.pop("DRIFTLINE_REGISTRY_URL", None)

    train = tmp_path / "train.csv"
    make(8000, seed=10).to_csv(train, index=False)
    registered = driftline(env, "model", "register", story.model, "--data", str(train), "--target", story.target,
                           *register_args, "--champion", "--reason", "first model, from train.csv")
    assert "champion" in registered.stdout

    frame = stream(story, make)
    port = free_port()
    up = Up(env, port, tmp_path / "up.log")
    env["DRIFTLINE_URL"] = up.url
    try:
        assert "v1" in driftline(env, "model", "show", story.model).stdout  # through up's registry API
        size = story.events // story.parts
        parts = [frame.iloc[i * size:(i + 1) * size] for i in range(story.parts)]
        for i, part in enumerate(parts + [None]):
            if part is not None:  # events of part i, then the labels of part i - 1: labels arrive late
                events = tmp_path / f"events-{i}.csv"
                part.drop(columns=[story.target]).to_csv(events, index=False)
                sent = driftline(env, "send", "events", str(events), "--model", story.model, "--quiet")
                assert f"accepted {len(part):,} " in sent.stdout + sent.stderr
            if i > 0:
                labels = tmp_path / f"labels-{i - 1}.csv"
                parts[i - 1][["event_id", story.target]].to_csv(labels, index=False)
                driftline(env, "send", "labels", str(labels), "--model", story.model, *label_args, "--quiet")

        predictions = f"SELECT count() FROM predictions FINAL WHERE model = '{story.model}' AND role = 'champion'"
        wait_for(lambda: scalar(env, predictions) == story.events, 600, f"{story.events} predictions", every_s=2)
        joined = f"SELECT count() FROM labels FINAL WHERE model = '{story.model}' AND status = 'joined'"
        wait_for(lambda: scalar(env, joined) == story.events, 600, "every label joined", every_s=2)
        promoted = f"SELECT max(model_version) FROM predictions FINAL WHERE model = '{story.model}'"
        wait_for(lambda: scalar(env, promoted) >= 2, 600, "a promoted challenger scoring", every_s=2)

        assert scalar(env, predictions) == story.events  # still exact: nothing counted twice
        assert scalar(env, f"SELECT count(DISTINCT event_id) FROM predictions FINAL WHERE model = '{story.model}' "
                           "AND role = 'champion'") == story.events

        # PSI of the shifted feature in the first window wholly after the shift.
        first_after = -(-story.shift_ms // WINDOW_MS) * WINDOW_MS
        psi = scalar(env, f"SELECT value FROM drift_metrics FINAL WHERE model = '{story.model}' AND model_version = 1 "
                          f"AND kind = 'data' AND statistic = 'psi' AND feature = '{story.shifted_feature}' "
                          f"AND window_start = {first_after}")
        assert psi >= 0.25
        calm = sql(env, f"SELECT max(value) AS psi FROM drift_metrics FINAL WHERE model = '{story.model}' "
                        f"AND kind = 'data' AND statistic = 'psi' AND feature = '{story.shifted_feature}' "
                        f"AND window_end <= {story.shift_ms}")
        assert calm[0]["psi"] < 0.1

        # One retrain request for the incident; the challenger it produced trained on stored labels and won.
        samples = metrics(up.url)
        assert metric(samples, "driftline_retrain_requests_total", model=story.model) == 1
        shown = json.loads(driftline(env, "model", "show", story.model, "2", "--json").stdout)
        lineage = shown["lineage"]
        assert "FROM" in lineage["training_sql"] and lineage["rows"] >= 1000 and lineage["parent_version"] == 1
        aliases = json.loads(driftline(env, "model", "list", "--json").stdout)
        assert [m["aliases"]["champion"] for m in aliases if m["model"] == story.model] == [2]

        # The counters match the SQL counts.
        assert metric(samples, "driftline_ingest_records_total", outcome="accepted") == 2 * story.events
        assert metric(samples, "driftline_records_out_total", service="predictor", topic="predictions") == story.events
        return env, up.url
    finally:
        assert up.stop(2) == 0  # SIGINT: checkpoint and exit 0


@pytest.mark.timeout(1800)
def test_a_churn_classifier_of_my_own(tmp_path):
    # The shift starts a drift window (540 s of event time), so the first window after it is wholly shifted.
    story = Story("churn", "churned", events=100_000, shift_at=54_000, parts=10, shifted_feature="monthly_charges")
    env, _ = run_story(story, churn, tmp_path, register_args=[], label_args=["--label-column", "churned"])
    quality = {r["model_version"]: r for r in sql(env, (
        "SELECT model_version, count() AS n, 1 - avg(error) AS accuracy FROM labels FINAL "
        f"WHERE model = 'churn' AND status = 'joined' AND toUnixTimestamp64Milli(event_time) >= {story.shift_ms} "
        "GROUP BY model_version ORDER BY model_version"))}
    # After the concept change v1 is worse than a coin; v2, trained on the stored labels since the drift, is not.
    assert quality[1]["accuracy"] < 0.45 and quality[2]["accuracy"] > 0.7 and quality[2]["n"] > 10_000
    unseen = scalar(env, "SELECT count() FROM predictions FINAL WHERE model = 'churn' "
                         "AND categorical_features['contract'] = 'weekly'")
    assert unseen > 1000  # the unseen category was scored, not refused


@pytest.mark.timeout(1800)
def test_a_delivery_time_regression_of_my_own(tmp_path):
    story = Story("delivery", "minutes", events=40_000, shift_at=12_000, parts=8, shifted_feature="route_km")
    env, _ = run_story(story, delivery, tmp_path, register_args=["--task", "regression"],
                       label_args=["--value-column", "minutes"])
    mae = {r["model_version"]: r["mae"] for r in sql(env, (
        "SELECT model_version, avg(error) AS mae FROM labels FINAL "
        f"WHERE model = 'delivery' AND status = 'joined' AND toUnixTimestamp64Milli(event_time) >= {story.shift_ms} "
        "GROUP BY model_version ORDER BY model_version"))}
    assert mae[2] < 0.5 * mae[1]
