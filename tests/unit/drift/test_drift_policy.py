"""Alert policy: one decision per incident, consecutive windows, hysteresis, cooldown."""

import json

import numpy as np
import pytest

from driftline.drift.detectors import ConceptDriftDetector
from driftline.drift.policy import AlertPolicy
from driftline.drift.profile import ReferenceProfile
from driftline.drift.psi import FeatureStats, psi_band
from driftline.drift import WindowedProfileCounter, WindowSpec, WindowStats

MIN = 60_000


def window(i, **psis):
    feats = {f: FeatureStats(f, "numeric", 1000, v, psi_band(v), 0.0) for f, v in psis.items()}
    return WindowStats("m", 1, "time", i * MIN, (i + 1) * MIN, 1000, i * MIN, (i + 1) * MIN - 1, feats)


def feed(policy, series, start=0, model="m", version=1):
    """series: list of dicts feature -> psi; returns {window index: decision}."""
    out = {}
    for i, psis in enumerate(series, start):
        d = policy.observe_window(model, version, window(i, **psis))
        if d is not None:
            out[i] = d
    return out


def test_no_decision_before_k_consecutive_windows():
    policy = AlertPolicy(consecutive_windows=3, cooldown_ms=0)
    # runs of 2 broken by a calm or a "monitor" window never fire
    series = [{"a": v} for v in (0.3, 0.3, 0.05, 0.3, 0.3, 0.2, 0.3, 0.3, 0.24)]
    assert feed(policy, series) == {}
    # runs on different features do not add up
    series = [{"a": 0.3, "b": 0.0}, {"a": 0.3, "b": 0.3}, {"a": 0.0, "b": 0.3}]
    assert feed(policy, series, start=20) == {}
    assert feed(policy, [{"a": 0.0, "b": 0.3}], start=23).keys() == {23}


def test_one_decision_per_incident_naming_its_signals():
    policy = AlertPolicy(consecutive_windows=3, cooldown_ms=0)
    series = [{"a": 0.01, "b": 0.01}] + [{"a": 0.3, "b": 0.02}] * 2 + [{"a": 0.4, "b": 0.5}] * 20
    out = feed(policy, series)
    assert list(out) == [3]
    d = out[3]
    assert d.reason == "data_drift" and (d.model, d.model_version) == ("m", 1)
    assert [(s.kind, s.feature, s.statistic, s.value, s.window_start, s.window_end) for s in d.signals] == [
        ("data", "a", "psi", 0.3, 1 * MIN, 2 * MIN),
        ("data", "a", "psi", 0.3, 2 * MIN, 3 * MIN),
        ("data", "a", "psi", 0.4, 3 * MIN, 4 * MIN),
    ]
    assert (d.window_start, d.window_end, d.decided_at_ms) == (1 * MIN, 4 * MIN, 4 * MIN)
    assert json.loads(json.dumps(d.to_dict()))["requested_at"] == 4 * MIN
    assert policy.status("m", 1)["in_incident"]


def test_multi_feature_decision():
    policy = AlertPolicy(consecutive_windows=2)
    (d,) = feed(policy, [{"a": 0.3, "b": 0.3, "c": 0.0}] * 2).values()
    assert sorted({s.feature for s in d.signals}) == ["a", "b"] and len(d.signals) == 4


def test_hysteresis_keeps_incident_open_between_thresholds():
    policy = AlertPolicy(consecutive_windows=2, reset_below=0.10, cooldown_ms=0)
    series = [{"a": 0.3}] * 2 + [{"a": 0.15}, {"a": 0.3}, {"a": 0.12}, {"a": 0.3}, {"a": 0.3}]
    assert list(feed(policy, series)) == [1]  # 0.15 / 0.12 never drop below reset_below
    assert policy.status("m", 1)["in_incident"]
    # every feature below 0.10 ends the incident; a new run then fires again
    series = [{"a": 0.09, "b": 0.05}, {"a": 0.3}, {"a": 0.3}]
    assert list(feed(policy, series, start=7)) == [9]


def test_incident_end_needs_all_features_below_reset():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=0)
    series = [{"a": 0.3, "b": 0.0}, {"a": 0.0, "b": 0.11}, {"a": 0.3, "b": 0.0}, {"a": 0.0, "b": 0.0},
              {"a": 0.3, "b": 0.0}]
    assert list(feed(policy, series)) == [0, 4]


def test_cooldown_suppresses_then_fires_if_drift_persists():
    policy = AlertPolicy(consecutive_windows=2, cooldown_ms=10 * MIN)
    # incident at window 1 (t = 2 min); ends at 2; drifts again at 3.., cooldown until 12 min
    series = [{"a": 0.3}, {"a": 0.3}, {"a": 0.0}] + [{"a": 0.3}] * 12
    out = feed(policy, series)
    assert list(out) == [1, 11]  # window 11 ends at 12 min, the first moment out of cooldown
    assert out[11].window_start == 10 * MIN  # the run kept only its last K windows
    assert policy.status("m", 1)["suppressed"] == 7  # windows 4..10


def test_cooldown_alone_after_incident_ends():
    policy = AlertPolicy(consecutive_windows=1, cooldown_ms=5 * MIN)
    series = [{"a": 0.3}, {"a": 0.0}, {"a": 0.3}, {"a": 0.0}, {"a": 0.0}, {"a": 0.3}]
    assert list(feed(policy, series)) == [0, 5]  # window 5 ends at 6 min >= 1 min + 5 min


def test_concept_drift():
    policy = AlertPolicy(consecutive_windows=2, cooldown_ms=10 * MIN)
    d = policy.observe_concept("m", 1, "ADWIN", 1023, 5 * MIN)
    assert d.reason == "concept_drift" and d.window_start == d.window_end == 5 * MIN
    assert [(s.kind, s.feature, s.statistic, s.value) for s in d.signals] == [("concept", "__error__", "ADWIN", 1023.0)]
    assert policy.observe_concept("m", 1, "ADWIN", 1500, 6 * MIN) is None  # in incident
    # data windows calm down (incident ends) but the cooldown still holds
    assert feed(policy, [{"a": 0.0}], start=6) == {}
    assert policy.observe_concept("m", 1, "DDM", 1600, 8 * MIN) is None
    assert feed(policy, [{"a": 0.3}] * 2, start=7) == {}
    assert policy.observe_concept("m", 1, "ADWIN", 1800, 14 * MIN) is None  # cooling until 15 min
    assert policy.status("m", 1)["suppressed"] == 4
    assert policy.observe_concept("m", 1, "ADWIN", 1900, 15 * MIN) is not None


def test_concept_after_cooldown_and_switch_off():
    policy = AlertPolicy(cooldown_ms=MIN)
    assert policy.observe_concept("m", 1, "ADWIN", 10, 0) is not None
    feed(policy, [{"a": 0.0}])
    assert policy.observe_concept("m", 1, "ADWIN", 20, 2 * MIN) is not None
    off = AlertPolicy(on_concept_drift=False)
    assert off.observe_concept("m", 1, "ADWIN", 10, 0) is None


def test_models_and_versions_are_independent():
    policy = AlertPolicy(consecutive_windows=1)
    assert feed(policy, [{"a": 0.3}], version=1).keys() == {0}
    assert feed(policy, [{"a": 0.3}], version=2).keys() == {0}
    assert feed(policy, [{"a": 0.3}], model="other").keys() == {0}
    assert feed(policy, [{"a": 0.3}], start=1, version=1) == {}


def test_replayed_and_small_windows_are_ignored():
    policy = AlertPolicy(consecutive_windows=2, min_events=500)
    assert feed(policy, [{"a": 0.3}]) == {}
    assert feed(policy, [{"a": 0.3}]) == {}  # the same window again: replay, ignored
    small = window(1, a=0.3)
    small.n = 10
    assert policy.observe_window("m", 1, small) is None
    assert feed(policy, [{"a": 0.3}], start=2).keys() == {2}


def test_snapshot_restore_mid_incident_matches_uninterrupted_run():
    rng = np.random.default_rng(0)
    series = [{"a": float(v), "b": float(w)} for v, w in rng.choice([0.02, 0.15, 0.3, 0.6], (200, 2))]
    kwargs = {"consecutive_windows": 2, "cooldown_ms": 7 * MIN}
    whole = feed(AlertPolicy(**kwargs), series)
    assert len(whole) >= 3
    for cut in (17, 55, 120):
        first = AlertPolicy(**kwargs)
        got = feed(first, series[:cut])
        second = AlertPolicy(**kwargs)
        second.restore(json.loads(json.dumps(first.snapshot())))
        got.update(feed(second, series[cut:], start=cut))
        assert {i: d.to_dict() for i, d in got.items()} == {i: d.to_dict() for i, d in whole.items()}


def test_end_to_end_one_shift_one_request():
    """Counter -> window stats -> policy, and a detector on the error stream."""
    rng = np.random.default_rng(3)
    profile = ReferenceProfile.fit(numeric={"x": rng.normal(size=20_000)}, score=rng.uniform(size=20_000))
    counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "time", size=MIN))
    policy = AlertPolicy(consecutive_windows=3, cooldown_ms=60 * MIN)
    decisions = []
    for minute in range(40):
        n = 2_000
        x = rng.normal(1.0 if minute >= 20 else 0.0, 1.0, n)
        t = minute * MIN + np.sort(rng.integers(0, MIN, n))
        for w in counter.update({"x": x, "__score__": rng.uniform(size=n)}, t):
            d = policy.observe_window("m", 1, w.stats(profile))
            if d:
                decisions.append(d)
    assert len(decisions) == 1
    assert decisions[0].window_start == 20 * MIN and decisions[0].window_end == 23 * MIN

    det = ConceptDriftDetector("ADWIN")
    errors = np.r_[rng.random(3_000) < 0.1, rng.random(3_000) < 0.5].astype(float)
    times = np.arange(errors.size) * 1_000
    fired = [policy.observe_concept("m", 2, det.method, i, int(times[i])) for i in det.update(errors)]
    assert det.n_detections >= 1 and sum(d is not None for d in fired) == 1


def test_bad_parameters():
    with pytest.raises(ValueError):
        AlertPolicy(consecutive_windows=0)
    with pytest.raises(ValueError):
        AlertPolicy(psi_threshold=0.1, reset_below=0.2)
    policy = AlertPolicy()
    w = window(0, a=0.3)
    w.by, w.max_event_time_ms = "count", None
    with pytest.raises(ValueError):
        policy.observe_window("m", 1, w)
