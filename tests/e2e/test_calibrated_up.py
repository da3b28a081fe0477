"""Calibrated thresholds as a user meets them: ``driftline up`` with
``DRIFTLINE_DRIFT_THRESHOLD_MODE=calibrated`` writes each window's threshold and mode.

A greenhouse model of the user's own (not the demo's data): registered from a CSV, then
6,000 events sent with ``driftline send`` in count windows of 2,000; ``driftline sql``
reads the drift_metrics rows while ``up`` runs. Every data row says 'calibrated'; the PSI
rows carry, per feature, exactly the threshold the library computes from the registered
reference profile at the configured false-alarm rate, well below the fixed 0.25.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.drift import ReferenceProfile
from driftline.drift.calibration import ThresholdRule
from driftline.registry import Registry

from test_own_model import driftline, scalar, sql
from test_up import Up, free_port, wait_for

MODEL = "greenhouse"
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW = 2000
EVENTS = 3 * WINDOW
RATE = 0.01


def greenhouse(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "temperature_c": rng.normal(24.0, 4.0, n),
        "humidity_pct": rng.beta(5.0, 3.0, n) * 100.0,
        "vents_open": rng.poisson(2.0, n),
        "zone": rng.choice(["north", "south", "east", "roof"], n, p=[0.4, 0.3, 0.25, 0.05]),
    })
    z = 0.3 * (frame["temperature_c"] - 24) - 0.04 * (frame["humidity_pct"] - 62.5) + (frame["zone"] == "roof")
    frame["wilted"] = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "yes", "no")
    return frame


@pytest.mark.timeout(600)
def test_up_in_calibrated_mode_writes_each_windows_threshold_and_mode(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "DRIFTLINE_HOME": str(home), "DRIFTLINE_DRIFT_THRESHOLD_MODE": "calibrated",
           "DRIFTLINE_DRIFT_FALSE_ALARM_RATE": str(RATE), "DRIFTLINE_DRIFT_WINDOW_BY": "count",
           "DRIFTLINE_DRIFT_WINDOW_SIZE": str(WINDOW)}
    for inherited in ("DRIFTLINE_STORE_DSN", "DRIFTLINE_REGISTRY_URL", "DRIFTLINE_URL"):
        env.pop(inherited, None)
    train = tmp_path / "train.csv"
    greenhouse(6000, seed=1).to_csv(train, index=False)
    driftline(env, "model", "register", MODEL, "--data", str(train), "--target", "wilted", "--champion",
              "--reason", "greenhouse model, from train.csv")

    live = greenhouse(EVENTS, seed=2).drop(columns=["wilted"])
    live.insert(0, "event_time", EPOCH_MS + np.arange(EVENTS) * 10)
    live.insert(0, "event_id", [f"gh-{i:06d}" for i in range(EVENTS)])
    events = tmp_path / "events.csv"
    live.to_csv(events, index=False)

    up = Up(env, free_port(), tmp_path / "up.log")
    env["DRIFTLINE_URL"] = up.url
    try:
        driftline(env, "send", "events", str(events), "--model", MODEL, "--quiet")
        psi_rows = f"SELECT count() FROM drift_metrics FINAL WHERE model = '{MODEL}' AND statistic = 'psi'"
        wait_for(lambda: scalar(env, psi_rows) == 3 * 5, 300, "three windows of PSI rows for 5 features", every_s=1)
        rows = sql(env, "SELECT feature, statistic, window_start, n, value, threshold, threshold_mode "
                        f"FROM drift_metrics FINAL WHERE model = '{MODEL}' AND kind = 'data' "
                        "ORDER BY feature, statistic, window_start")
    finally:
        assert up.stop(2) == 0

    registry = Registry(home / "registry")
    try:
        profile = ReferenceProfile.from_dict(registry.get(MODEL, 1).profile)
    finally:
        registry.close()
    expected = ThresholdRule("calibrated", false_alarm_rate=RATE).for_window(profile, WINDOW)

    assert {r["threshold_mode"] for r in rows} == {"calibrated"}
    psi = [r for r in rows if r["statistic"] == "psi"]
    assert sorted({r["feature"] for r in psi}) == sorted(profile.features) and {r["n"] for r in psi} == {WINDOW}
    for r in psi:
        assert r["threshold"] == pytest.approx(expected[r["feature"]].psi, rel=1e-12)
        assert 0 < r["threshold"] < 0.25
    for r in rows:
        if r["statistic"] == "js":
            assert r["threshold"] == pytest.approx(expected[r["feature"]].js, rel=1e-12)
        elif r["statistic"] != "psi":
            assert r["threshold"] is None
    print(f"\nthresholds in force (rate {RATE}, windows of {WINDOW}): "
          + ", ".join(f"{f} {t.psi:.4f}" for f, t in sorted(expected.items())))
