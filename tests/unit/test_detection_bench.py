"""The detection benchmark's harness on tiny streams: what it measures must be what happened."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is a top-level package of the checkout, not installed: import it from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.detection import accuracies  # noqa: E402
from bench.detection_loop import LoopConfig, first_model, run_loop, stationary_detections  # noqa: E402
from bench.detection_streams import scenario  # noqa: E402

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


def test_stationary_detections_counts_every_detection_and_scales_by_what_was_measured():
    stream = scenario("stationary").make(5, 2000, 20_000, 0)
    adwin, eddm = stationary_detections(stream, ["ADWIN", "EDDM"], first_model(stream), CONFIG, budget_s=60)
    assert (adwin.measured, eddm.measured) == (20_000, 20_000) and not adwin.scaled
    assert adwin.detections == 0
    # EDDM fires on stationary errors at this error rate (~0.2): the count is not stuck at 0
    assert eddm.detections > 0
    assert eddm.per_1e6 == eddm.detections * 50
