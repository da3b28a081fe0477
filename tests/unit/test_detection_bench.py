"""The detection benchmark's harness on tiny streams: what it measures must be what happened."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# bench/ is a top-level package of the checkout, not installed: import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.detection import accuracies  # noqa: E402
from bench.detection_loop import (  # noqa: E402
    LoopConfig,
    drift_detector_detections,
    first_model,
    run_loop,
    stationary_detections,
    stationary_errors,
)
from bench.detection_streams import scenario  # noqa: E402
from driftline.drift.profile import ReferenceProfile  # noqa: E402

CONFIG = LoopConfig(label_delay=100)


@pytest.fixture(scope="module")
def abrupt():
    stream = scenario("hyperplane_abrupt").make(3, 2000, 3000, 6000)
    return stream, run_loop(stream, "ADWIN", CONFIG)


def test_an_abrupt_concept_change_is_detected_after_it_and_not_before(abrupt):
    stream, result = abrupt
    assert stream.change_start == 3000
    assert result.false_alarms == 0
    first = result.first_detection
    assert first is not None and first.reason == "concept_drift"
    # the detector reads errors, and the first error of the new concept arrives label_delay events later
    assert result.delay >= CONFIG.label_delay
    assert result.delay < 2000
    assert not result.missed


def test_the_promoted_retrain_recovers_the_accuracy_the_change_took(abrupt):
    _, result = abrupt
    promotion = result.promotion
    assert promotion is not None and promotion.promoted
    assert promotion.at_event > result.first_detection.at_event
    before, after_change, after_retrain = accuracies(result)
    assert after_change < before - 0.1  # the change hurts the first model
    assert after_retrain > after_change + 0.1


def test_a_stationary_stream_gives_no_request():
    stream = scenario("stationary").make(5, 2000, 6000, 0)
    result = run_loop(stream, "ADWIN", CONFIG)
    assert result.change_start is None
    assert result.requests == [] and result.retrains == []
    assert result.false_alarms == 0


def test_stationary_detections_count_what_the_drift_detector_would_count():
    stream = scenario("stationary").make(5, 2000, 20_000, 0)
    champion = first_model(stream)
    errors = stationary_errors(stream, champion)
    adwin, eddm = stationary_detections(errors, ["ADWIN", "EDDM"], CONFIG, budget_s=60)
    assert (adwin.measured, eddm.measured) == (20_000, 20_000) and not adwin.scaled
    assert adwin.detections == 0
    # EDDM fires on stationary errors at this error rate (~0.2) while it warms up: the count is not stuck at 0
    assert eddm.detections > 0
    assert eddm.per_1e6 == eddm.detections * 50
    # the short cut (errors straight into the detector) counts what the records through DriftDetector count
    profile = ReferenceProfile.from_dict(champion.profile)
    assert drift_detector_detections(errors, "EDDM", profile, CONFIG) == eddm.detections
    assert drift_detector_detections(errors, "ADWIN", profile, CONFIG) == 0


def test_a_detector_out_of_budget_is_measured_on_what_it_saw_and_scaled():
    errors = np.zeros(50_000)
    (count,) = stationary_detections(errors, ["ADWIN"], CONFIG, budget_s=0.0, chunk=10_000)
    assert count.measured == 10_000 and count.scaled and count.per_1e6 == 0.0  # one chunk at least
    (count,) = stationary_detections(errors, ["ADWIN"], CONFIG, budget_s=60, chunk=10_000)
    assert count.measured == 50_000 and not count.scaled and count.per_1e6 == 0.0
