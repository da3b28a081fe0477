"""A promoted challenger does not alarm on the data it was trained for (issue 11, item 2).

Its reference profile is made on the gate's holdout, rows it did not train on. Before, it was its own
training rows: a random forest's scores on them are far more confident than on new rows, and the score
PSI of an unchanged stream sat in the act band in every window (issue 11 saw 0.70).

A model of our own: a bakery's loaves (proof time, oven humidity, flour), under-baked or fine, with label
noise; live data of the challenger's own distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftline.contract import FeatureContract
from driftline.drift.profile import SCORE, ReferenceProfile
from driftline.drift.psi import psi
from driftline.registry import LoadedModel
from driftline.registry.core import ModelVersion
from driftline.services.retrainer.logic import LabelledData, Retrainer
from driftline.training import prediction_score, train

LOAVES = FeatureContract(numeric=("proof_min", "humidity_pct", "crust_temp_c"), categorical=("flour",),
                         classes=("fine", "underbaked"))
FOREST = {"estimator": "random_forest", "params": {"n_estimators": 40, "random_state": 0, "n_jobs": 1}}


def loaves(n: int, seed: int, *, new_oven: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"proof_min": rng.normal(45, 8, n), "humidity_pct": rng.uniform(20, 80, n),
                          "crust_temp_c": rng.normal(210, 12, n),
                          "flour": rng.choice(np.array(["rye", "spelt", "wheat"], dtype=object), n)})
    # the new oven runs hot: the same loaf is under-baked at a lower proof time (a concept change)
    z = ((frame.proof_min - (38 if new_oven else 45)) / 8 + (frame.humidity_pct - 50) / 30
         - (frame.crust_temp_c - 210) / 24 + rng.normal(0, 1.2, n))
    return frame, np.where(z > 0, "underbaked", "fine").astype(object)


def score_psi(profile: dict, estimator, frame: pd.DataFrame) -> float:
    reference = ReferenceProfile.from_dict(profile).features[SCORE]
    return psi(reference.counts(prediction_score(estimator, LOAVES, frame)), reference.expected)


def test_a_promoted_challengers_score_psi_on_its_own_distribution_stays_stable():
    frame, labels = loaves(6000, seed=1)
    champion = train(FOREST, LOAVES, frame, labels)
    meta = ModelVersion("bakery", 1, "0" * 64, 0, "test", LOAVES, recipe=FOREST, lineage={"train_rows": 6000})
    recent, recent_labels = loaves(3000, seed=2, new_oven=True)
    data = LabelledData(recent, recent_labels, np.arange(3000, dtype=np.int64) * 1000, "test", rows_needed=3000)

    verdict = Retrainer(min_rows=3000).evaluate(data, LoadedModel(meta, champion.estimator))

    assert verdict.promote, verdict.reason
    assert (verdict.train_rows, verdict.holdout_rows) == (2100, 900)
    challenger = verdict.challenger
    assert challenger.profile_rows == 900 and not challenger.profile_in_sample
    # what the profile used to be: the 2,100 rows the challenger trained on
    fit_rows = recent.iloc[:2100].reset_index(drop=True)
    in_sample = train(FOREST, LOAVES, fit_rows, recent_labels[:2100])
    assert in_sample.profile_in_sample and in_sample.profile_rows == 2100

    live = [loaves(2000, seed=100 + window, new_oven=True)[0] for window in range(5)]
    holdout_psi = [score_psi(challenger.profile, challenger.estimator, window) for window in live]
    in_sample_psi = [score_psi(in_sample.profile, in_sample.estimator, window) for window in live]
    print(f"score PSI, 5 windows of 2,000 live rows: holdout profile {np.round(holdout_psi, 3).tolist()}, "
          f"in-sample profile {np.round(in_sample_psi, 3).tolist()}")
    assert max(holdout_psi) < 0.10
    assert min(in_sample_psi) >= 0.25  # in the act band: an incident, every window
