"""Where ``driftline model register``'s reference profile comes from, on the paths besides a plain holdout
(issue 11, item 2): a ``--reference`` repeating training rows, and a pipeline trained elsewhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from driftline.contract_inference import ContractInference
from driftline.datasets import TableSource
from driftline.drift.profile import SCORE, ReferenceProfile
from driftline.models import DEFAULT_RECIPE
from driftline.registration import from_artifact, from_table


def orchard(rows: int, seed: int, classes=("bruised", "sound")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"drop_height_cm": rng.uniform(0, 80, rows), "firmness_n": rng.normal(60, 9, rows),
                          "cultivar": rng.choice(["gala", "fuji"], rows)})
    z = (frame.drop_height_cm - 40) / 15 - (frame.firmness_n - 60) / 9 + rng.normal(0, 0.8, rows)
    frame["fruit"] = np.asarray(classes, dtype=object)[np.digitize(z, [0.0] if len(classes) == 2 else [-1.0, 1.0])]
    return frame


def source(name: str, frame: pd.DataFrame) -> TableSource:
    return TableSource(file=name, format="csv", sha256="0" * 64, rows=len(frame), columns=tuple(frame.columns))


def test_reference_rows_that_are_training_rows_are_left_out_of_the_profile():
    train = orchard(2000, seed=1)
    reference = pd.concat([train.iloc[:300], orchard(500, seed=2)], ignore_index=True)
    prepared = from_table(train, source("train.csv", train), ContractInference(target="fruit"), DEFAULT_RECIPE,
                          reference=(reference, source("ref.csv", reference)))
    assert prepared.lineage["profile_rows"] == 500 and prepared.metrics["rows"] == 500
    assert prepared.lineage["profile_from"]["training_rows_left_out"] == 300
    assert {f["n_reference"] for f in prepared.profile["features"]} == {500}
    assert "ref.csv: 300 rows that are also training rows left out" in " ".join(prepared.notes)


def test_a_multiclass_profile_watches_the_score_the_predictor_publishes():
    train = orchard(1500, seed=3, classes=("bruised", "ok", "sound"))
    prepared = from_table(train, source("train.csv", train), ContractInference(target="fruit"), DEFAULT_RECIPE)
    score = ReferenceProfile.from_dict(prepared.profile).features[SCORE]
    # the predicted class's probability is at least 1/3; the last class's probability (before) often is not
    assert score.edges.min() >= 1 / 3 - 1e-9


def test_a_pipeline_trained_elsewhere_is_profiled_on_its_reference_and_the_lineage_says_it_cannot_tell():
    train = orchard(1000, seed=4)
    features = ["drop_height_cm", "firmness_n"]
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(train[features], train["fruit"])
    reference = orchard(400, seed=5)[features + ["fruit"]]
    prepared = from_artifact(forest, "forest.skops", "0" * 64, ContractInference(target="fruit"),
                             (reference, source("outside.csv", reference)))
    assert prepared.lineage["profile_rows"] == 400
    assert prepared.lineage["profile_from"]["in_sample"] == "unknown"
