"""columns_of reads a batch of Prediction records in one pass per field and bins every value
as the per-feature reading it replaced did: missing features, None and NaN included."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.drift import SCORE, ReferenceProfile
from driftline.services.drift_detector.logic import columns_of

RNG = np.random.default_rng(3)
PROFILE = ReferenceProfile.fit(numeric={"torque_nm": RNG.normal(50, 5, 500), "rpm": RNG.normal(900, 80, 500)},
                               categorical={"gearbox": RNG.choice(["manual", "auto"], 500),
                                            "plant": RNG.choice(["lyon", "graz"], 500)},
                               score=RNG.uniform(size=500))


def per_feature(predictions, profile):
    """The previous reading: one pass over the records per feature."""
    columns = {}
    for name, feature in profile.features.items():
        if name == SCORE:
            columns[name] = np.fromiter((p["score"] for p in predictions), np.float64, len(predictions))
        elif feature.kind == "numeric":
            columns[name] = np.fromiter((p["numeric_features"].get(name, np.nan) for p in predictions),
                                        np.float64, len(predictions))
        else:
            columns[name] = np.array([p["categorical_features"].get(name) for p in predictions], dtype=object)
    return columns


def record(score, numeric, categorical):
    return {"score": score, "numeric_features": numeric, "categorical_features": categorical}


BATCHES = {
    "complete": [record(0.2, {"torque_nm": 51.0, "rpm": 870}, {"gearbox": "auto", "plant": "graz"}),
                 record(0.9, {"torque_nm": 40.5, "rpm": 1200.0}, {"gearbox": "cvt", "plant": "lyon"})],
    "missing and odd values": [
        record(0.1, {"torque_nm": 49.0}, {"gearbox": None, "plant": "lyon"}),
        record(0.3, {"rpm": float("nan"), "torque_nm": 60.0}, {"gearbox": "manual", "plant": float("nan")}),
        record(0.5, {}, {})],
    "empty": [],
}


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_every_value_lands_in_the_bin_the_per_feature_reading_gave(batch):
    ours, before = columns_of(batch, PROFILE), per_feature(batch, PROFILE)
    assert list(ours) == list(PROFILE.features)
    for name, feature in PROFILE.features.items():
        assert feature.bin_indices(ours[name]).tolist() == feature.bin_indices(before[name]).tolist()
        if feature.kind == "numeric":
            np.testing.assert_array_equal(ours[name], before[name])
