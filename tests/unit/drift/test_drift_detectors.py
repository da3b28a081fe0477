"""Every wrapped river detector reproduces river's documented detections."""

import random

import numpy as np
import pytest
from river import drift

from driftline.drift.detectors import BINARY_METHODS, METHODS, ConceptDriftDetector


def two_regimes():
    # the stream of the docstrings of ADWIN, KSWIN and PageHinkley
    rng = random.Random(12345)
    return rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)


def binary_shift():
    # the stream of the docstrings of DDM, EDDM, HDDM_A and HDDM_W
    rng = random.Random(42)
    stream = rng.choices([0, 1], k=1000)
    return stream + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])


# method, params, stream, indices printed in river's docstring example
DOCUMENTED = [
    ("ADWIN", {}, two_regimes, [1023]),
    ("KSWIN", {"alpha": 0.0001, "seed": 42}, two_regimes, [1016]),
    ("PageHinkley", {}, two_regimes, [1006]),
    ("DDM", {}, binary_shift, [1334]),
    ("EDDM", {"alpha": 0.8, "beta": 0.75}, binary_shift, [1278]),
    ("HDDM_A", {}, binary_shift, [1206]),
    ("HDDM_W", {}, binary_shift, [1077]),
]


def test_all_seven_are_covered():
    assert {m for m, *_ in DOCUMENTED} == set(METHODS) and len(METHODS) == 7


@pytest.mark.parametrize("method,params,stream,expected", DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_documented_indices_in_one_batch(method, params, stream, expected):
    det = ConceptDriftDetector(method, **params)
    assert det.update(np.array(stream())) == expected
    assert det.n_seen == 2000 and det.n_detections == len(expected) and det.last_detection == expected[-1]


@pytest.mark.parametrize("method,params,stream,expected", DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_documented_indices_across_batches_and_a_restart(method, params, stream, expected):
    data = np.array(stream())
    det = ConceptDriftDetector(method, **params)
    found = det.update(data[:333]) + det.update(data[333:1001])
    restarted = ConceptDriftDetector("ADWIN")  # method and params come from the snapshot
    restarted.restore(det.snapshot())
    assert restarted.method == method and restarted.n_seen == 1001
    found += restarted.update(data[1001:1500]) + restarted.update(data[1500:])
    assert found == expected


@pytest.mark.parametrize("method,params,stream,expected", DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_same_as_river_loop(method, params, stream, expected):
    data = stream()
    river_det = METHODS[method](**params)
    raw = []
    for i, x in enumerate(data):
        river_det.update(x)
        if river_det.drift_detected:
            raw.append(i)
    assert raw == expected  # river itself, as documented
    assert ConceptDriftDetector(method, **params).update(np.array(data, dtype=float)) == raw


def test_binary_detectors_live_in_river_binary_and_reject_non_binary():
    for m in BINARY_METHODS:
        assert METHODS[m].__module__.startswith("river.drift.binary")
        with pytest.raises(ValueError):
            ConceptDriftDetector(m).update(np.array([0.0, 0.5]))
    assert METHODS["ADWIN"] is drift.ADWIN


def test_names_and_errors():
    assert ConceptDriftDetector().method == "ADWIN"
    assert ConceptDriftDetector("hddm-a").method == "HDDM_A"
    assert ConceptDriftDetector("page_hinkley").method == "PageHinkley"
    assert ConceptDriftDetector("ADWIN", delta=0.1).detector.delta == 0.1
    with pytest.raises(ValueError):
        ConceptDriftDetector("CUSUM")
    with pytest.raises(ValueError):
        ConceptDriftDetector().update(np.array([np.nan]))


def test_drift_detected_and_warning_properties():
    data = np.array(binary_shift())
    det = ConceptDriftDetector("DDM")
    det.update(data[:1335])
    assert det.drift_detected  # index 1334 was the last one seen
    det.update(data[1335:1336])
    assert not det.drift_detected
    assert isinstance(det.warning_detected, bool)
    assert ConceptDriftDetector("ADWIN").warning_detected is False
