"""``driftline model register`` profiles a version on rows it did not train on, on every path (issue 11, item 2).

As a user types it (subprocesses, real files), on a greenhouse table of our own: a random forest, whose
scores on its own training rows are far more confident than on new ones, so an in-sample profile would put
an unchanged stream in the act band. Checked: the holdout profile's score PSI on fresh rows of the same
distribution, and a ``--reference`` of training rows refused (the other paths, a partly repeated
``--reference`` and a pipeline trained elsewhere, are in tests/unit/test_registration_profiles.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from driftline.drift.profile import SCORE, ReferenceProfile
from driftline.drift.psi import psi
from driftline.registry import Registry

DRIFTLINE = [str(Path(sys.executable).with_name("driftline"))]
FOREST = json.dumps({"estimator": "random_forest", "params": {"n_estimators": 30, "random_state": 0}})


def greenhouse(rows: int, seed: int) -> pd.DataFrame:
    """Plants: soil moisture, light, variety; wilted or not, with noise a forest memorises."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"soil_moisture_pct": rng.uniform(10, 60, rows), "lux_k": rng.gamma(3.0, 8.0, rows),
                          "variety": rng.choice(["basil", "tomato", "pepper"], rows)})
    z = (30 - frame.soil_moisture_pct) / 10 + (frame.lux_k - 24) / 12 + rng.normal(0, 1.2, rows)
    frame["wilted"] = np.where(z > 0, "yes", "no")
    return frame


def register(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_HOME"] = str(home)
    done = subprocess.run(DRIFTLINE + ["model", "register", *args, "--reason", "issue 11 profile check"], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == (0 if ok else 2), f"{args}: rc {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


def score_psi(home: Path, model: str, version: int, fresh: pd.DataFrame) -> float:
    registry = Registry(home / "registry")
    try:
        loaded = registry.load(model, version=version)
        reference = ReferenceProfile.from_dict(loaded.meta.profile).features[SCORE]
        scores = loaded.estimator.predict_proba(fresh[["soil_moisture_pct", "lux_k", "variety"]])[:, 1]
        return psi(reference.counts(scores), reference.expected)
    finally:
        registry.close()


def test_register_profiles_held_out_rows_on_every_path(tmp_path):
    home = tmp_path / "home"
    train = greenhouse(4000, seed=1)
    train.to_csv(tmp_path / "train.csv", index=False)

    # --data alone: a quarter held out, profiled and measured there
    shown = json.loads(register(home, "greenhouse", "--data", str(tmp_path / "train.csv"), "--target", "wilted",
                                "--recipe", FOREST, "--holdout", "0.25", "--champion", "--json").stdout)
    lineage = shown["lineage"]
    assert (lineage["train_rows"], lineage["profile_rows"]) == (3000, 1000)
    assert lineage["profile_from"]["in_sample"] is False and lineage["profile_from"]["held_out_of"] == "train.csv"
    fresh = greenhouse(3000, seed=7)
    held_out_psi = score_psi(home, "greenhouse", 1, fresh)
    assert held_out_psi < 0.10, held_out_psi

    # --reference holding nothing but training rows: a clear error, nothing registered
    train.iloc[:500].to_csv(tmp_path / "same.csv", index=False)
    refused = register(home, "greenhouse", "--data", str(tmp_path / "train.csv"), "--target", "wilted",
                       "--reference", str(tmp_path / "same.csv"), ok=False)
    assert "every row of same.csv is also a training row" in refused.stderr
    registry = Registry(home / "registry")
    assert len(registry.versions("greenhouse")) == 1
    registry.close()
    print(f"greenhouse random forest: score PSI of fresh rows against the holdout profile {held_out_psi:.3f}")
