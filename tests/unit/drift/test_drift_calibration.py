"""The calibrated PSI threshold: its shape (n, m, bins, rate), its accuracy against windows of
real data, the columns it fills, and how the alert policy and the settings use it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.special import ndtr

from driftline.config import Settings
from driftline.drift import AlertPolicy, FeatureProfile, ReferenceProfile, WindowSpec, WindowStats
from driftline.drift.calibration import (
    CALIBRATED,
    FIXED,
    ThresholdRule,
    _js_rows,
    _n_on_grid,
    _psi_rows,
    asymptotic_psi_threshold,
    null_quantiles,
)
from driftline.drift.psi import FeatureStats, js_distance, psi, psi_band
from driftline.services.drift_detector.logic import DriftDetector


def normal_profile(m: int, bins: int = 10, seed: int = 0) -> FeatureProfile:
    return FeatureProfile.fit_numeric("x", np.random.default_rng(seed).normal(size=m), n_bins=bins)


def test_the_threshold_falls_with_n_and_m_and_rate_and_rises_with_bins():
    tail = 0.002
    by_n = [null_quantiles(normal_profile(20_000), n, tail).psi for n in (200, 1000, 10_000)]
    by_m = [null_quantiles(normal_profile(m), 1000, tail).psi for m in (1000, 5000, 50_000)]
    by_bins = [null_quantiles(normal_profile(20_000, bins), 1000, tail).psi for bins in (5, 10, 20)]
    rule = {rate: ThresholdRule(CALIBRATED, false_alarm_rate=rate) for rate in (0.05, 0.01, 0.001)}
    profile = ReferenceProfile.fit(numeric={"x": np.random.default_rng(1).normal(size=20_000)})
    by_rate = [r.for_window(profile, 1000)["x"].psi for r in rule.values()]
    assert by_n[0] > by_n[1] > by_n[2]
    assert by_m[0] > by_m[1] > by_m[2]
    assert by_bins[0] < by_bins[1] < by_bins[2]
    assert by_rate[0] < by_rate[1] < by_rate[2]
    # the JS distance threshold moves with the PSI one
    assert null_quantiles(normal_profile(20_000), 200, tail).js > null_quantiles(normal_profile(20_000), 10_000, tail).js


def test_more_features_share_the_rate_bonferroni():
    rng = np.random.default_rng(2)
    one = ReferenceProfile.fit(numeric={"x": rng.normal(size=20_000)})
    five = ReferenceProfile.fit(numeric={f"x{i}": rng.normal(size=20_000) for i in range(5)})
    rule = ThresholdRule(CALIBRATED, false_alarm_rate=0.01)
    alone, shared = rule.for_window(one, 1000)["x"], rule.for_window(five, 1000)["x0"]
    assert shared.psi > alone.psi  # each of five features alarms at 0.002, the lone one at 0.01
    assert shared.psi == pytest.approx(null_quantiles(five.features["x0"], _n_on_grid(1000), 0.002).psi)


def exceedance_ratio(make_profile, true_probabilities, n, tail, references, windows, seed):
    """Observed / nominal rate at which windows of real data (reference refitted each time) reach
    the calibrated threshold and the χ² one."""
    rng = np.random.default_rng(seed)
    hits_calibrated = hits_chi2 = 0
    for _ in range(references):
        fp = make_profile(rng)
        counts = rng.multinomial(n, true_probabilities(fp), size=windows)
        values = _psi_rows(counts, fp.expected, 1e-4)
        hits_calibrated += int(np.sum(values >= null_quantiles(fp, n, tail).psi))
        chi2 = asymptotic_psi_threshold(n, fp.n_reference, int(np.sum(fp.expected > 0)), tail)
        hits_chi2 += int(np.sum(values >= chi2))
    nominal = tail * references * windows
    return hits_calibrated / nominal, hits_chi2 / nominal


def test_the_threshold_holds_its_rate_on_real_windows_where_the_chi2_formula_does_not():
    # 10 quantile bins of a continuous feature, windows of 200, reference of 5,000 rows.
    def numeric(rng):
        return FeatureProfile.fit_numeric("x", rng.normal(size=5000))

    def bin_mass(fp):  # the true probability of each bin, missing bin included
        return np.diff(ndtr(np.concatenate([[-np.inf], fp.edges, [np.inf]]))).tolist() + [0.0]

    calibrated, chi2 = exceedance_ratio(numeric, bin_mass, n=200, tail=0.01, references=20, windows=10_000, seed=3)
    print(f"\nnumeric, n=200, m=5000, tail 0.01: calibrated {calibrated:.2f}x, chi2 {chi2:.2f}x the nominal rate")
    assert 0.75 <= calibrated <= 1.2
    assert chi2 > 1.25  # measured: the χ² formula is anti-conservative here

    # A categorical feature with rare categories (some the reference never sees).
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.01, 0.005, 0.003, 0.001, 0.0005, 0.0002, 0.0001, 0.0001,
                  0.0001, 0.00005, 0.00005])
    p = p / p.sum()
    names = np.array([f"c{i:02d}" for i in range(p.size)])

    def categorical(rng):
        return FeatureProfile.fit_categorical("c", rng.choice(names, size=2000, p=p))

    def category_mass(fp):
        mass = [p[int(c[1:])] for c in fp.categories]
        return mass + [max(1.0 - sum(mass), 0.0), 0.0]  # never-seen categories fall in the unseen bin

    calibrated, chi2 = exceedance_ratio(categorical, category_mass, n=200, tail=0.01, references=15,
                                        windows=10_000, seed=4)
    print(f"categorical with rare categories, n=200, m=2000, tail 0.01: calibrated {calibrated:.2f}x, "
          f"chi2 {chi2:.2f}x the nominal rate")
    assert 0.5 <= calibrated <= 1.25  # the categories a reference sees vary: looser below, never far above
    assert chi2 > 2.0


def test_the_chi2_formula_and_the_simulation_agree_where_the_approximation_is_good():
    fp = normal_profile(1_000_000)
    for tail in (0.05, 0.01):
        simulated = null_quantiles(fp, 10_000, tail).psi
        assert simulated == pytest.approx(asymptotic_psi_threshold(10_000, 1_000_000, 10, tail), rel=0.05)


def test_vectorised_statistics_match_the_ones_written():
    rng = np.random.default_rng(5)
    expected = np.array([0.3, 0.3, 0.2, 0.1, 0.1, 0.0])
    counts = rng.multinomial(50, [0.2, 0.2, 0.2, 0.2, 0.15, 0.05], size=20)
    counts[0, 0] = 0
    assert _psi_rows(counts, expected, 1e-4) == pytest.approx([psi(c, expected) for c in counts])
    assert _js_rows(counts, expected) == pytest.approx([js_distance(c, expected) for c in counts])


def test_deep_tails_are_extrapolated_upwards_and_window_sizes_rounded_down():
    fp = normal_profile(20_000)
    reachable = null_quantiles(fp, 1000, 1e-3, draws=50_000, max_draws=50_000).psi  # 200 / 50,000 = 4e-3 is read
    deeper = null_quantiles(fp, 1000, 1e-5, draws=50_000, max_draws=50_000).psi
    assert deeper > reachable > null_quantiles(fp, 1000, 1e-2).psi
    assert deeper >= asymptotic_psi_threshold(1000, 20_000, 10, 1e-5)  # exponential extrapolation errs high
    assert [_n_on_grid(n) for n in (1, 31, 200, 1000, 10_000)] == [1, 31, 197, 980, 9741]
    assert all(_n_on_grid(n) <= n and _n_on_grid(n) >= 0.95 * n for n in range(32, 50_000, 997))


def test_a_profile_without_a_row_count_is_taken_as_noisy_as_the_window():
    fp = normal_profile(1_000_000)
    unknown = FeatureProfile.from_dict({**fp.to_dict(), "n_reference": 0})
    assert null_quantiles(unknown, 1000, 0.01).psi == pytest.approx(null_quantiles(fp, 1000, 0.01, m=1000).psi)
    assert null_quantiles(unknown, 1000, 0.01).psi > 1.5 * null_quantiles(fp, 1000, 0.01).psi


def test_a_feature_with_one_category_alarms_on_any_change_but_not_on_none():
    fp = FeatureProfile.fit_categorical("plan", np.array(["basic"] * 1000))
    level = null_quantiles(fp, 500, 0.01).psi
    assert level > 0.0
    assert psi(np.array([500, 0, 0]), fp.expected) < level
    assert psi(np.array([499, 1, 0]), fp.expected) >= level  # one unseen plan


def test_fixed_mode_and_bad_rules():
    profile = ReferenceProfile.fit(numeric={"x": np.arange(100.0)})
    assert ThresholdRule(psi_threshold=0.3, reset_below=0.05).for_window(profile, 10)["x"].psi == 0.3
    for bad in ({"mode": "adaptive"}, {"false_alarm_rate": 0.0}, {"false_alarm_rate": 0.6},
                {"reset_below": 0.5}, {"draws": 10}):
        with pytest.raises(ValueError):
            ThresholdRule(**bad)


def test_window_rows_carry_the_threshold_and_the_mode():
    rng = np.random.default_rng(6)
    profile = ReferenceProfile.fit(numeric={"soil_ph": rng.normal(6.5, 0.4, 8000)},
                                   categorical={"crop": rng.choice(["kale", "leek", "beet"], 8000)},
                                   score=rng.uniform(size=8000), model="greens", version=1)
    rule = ThresholdRule(CALIBRATED, false_alarm_rate=0.02)
    levels = rule.for_window(profile, 1000)
    predictions = [{"prediction_id": f"g{i}", "event_id": f"g{i}", "model": "greens", "model_version": 1,
                    "role": "champion", "score": float(rng.uniform()),
                    "numeric_features": {"soil_ph": float(rng.normal(6.5, 0.4))},
                    "categorical_features": {"crop": str(rng.choice(["kale", "leek", "beet"]))},
                    "event_time": i * 10} for i in range(2500)]

    def rows(**kwargs):
        detector = DriftDetector(lambda model, version: profile, WindowSpec("tumbling", "count", size=1000),
                                 AlertPolicy(consecutive_windows=1, min_events=1), **kwargs)
        return [r for r in detector.observe_predictions(predictions, now_ms=0).metric_rows if r["kind"] == "data"]

    calibrated = rows(thresholds=rule)
    assert {r["window_start"] for r in calibrated} == {0, 1000}
    for r in calibrated:
        assert r["threshold_mode"] == "calibrated"
        level = levels[r["feature"]]
        assert r["threshold"] == {"psi": level.psi, "js": level.js}.get(r["statistic"])
    assert {r["statistic"] for r in calibrated if r["threshold"] is not None} == {"psi", "js"}
    psi_levels = {r["feature"]: r["threshold"] for r in calibrated if r["statistic"] == "psi"}
    assert psi_levels["crop"] != psi_levels["soil_ph"]  # per feature: the categorical's own bins

    fixed = rows()  # no rule given: the policy's own fixed levels
    assert {(r["threshold_mode"], r["threshold"]) for r in fixed if r["statistic"] == "psi"} == {("fixed", 0.25)}
    assert all(r["threshold"] is None for r in fixed if r["statistic"] != "psi")


def window(i: int, mode: str, **psis) -> WindowStats:
    """Windows whose features carry a calibrated alarm level of 0.02 and reset level of 0.01."""
    level = {"threshold": 0.02, "reset_below": 0.01} if mode == CALIBRATED else {"threshold": 0.25,
                                                                                 "reset_below": 0.10}
    feats = {f: FeatureStats(f, "numeric", 1000, v, psi_band(v), 0.0, threshold_mode=mode, **level)
             for f, v in psis.items()}
    return WindowStats("m", 1, "time", i * 60_000, (i + 1) * 60_000, 1000, None, None, feats, mode)


def test_the_policy_reads_the_levels_the_statistics_carry():
    series = [0.005, 0.03, 0.03, 0.015, 0.015, 0.005, 0.03]
    fired = {}
    for mode in (CALIBRATED, FIXED):
        policy = AlertPolicy(consecutive_windows=1, cooldown_ms=0)
        fired[mode] = [i for i, v in enumerate(series)
                       if policy.observe_window("m", 1, window(i, mode, a=v, b=0.001)) is not None]
    # calibrated: alarm at 0.03 >= 0.02, the incident stays open while 0.015 >= 0.01, ends at 0.005, alarms again
    assert fired[CALIBRATED] == [1, 6]
    assert fired[FIXED] == []  # the policy's own 0.25 band


def test_settings_choose_the_mode_and_refuse_nonsense(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_DRIFT_THRESHOLD_MODE", "calibrated")
    monkeypatch.setenv("DRIFTLINE_DRIFT_FALSE_ALARM_RATE", "0.001")
    s = Settings()
    assert (s.drift_threshold_mode, s.drift_false_alarm_rate) == ("calibrated", 0.001)
    monkeypatch.delenv("DRIFTLINE_DRIFT_FALSE_ALARM_RATE")
    assert Settings().drift_false_alarm_rate == 0.01
    monkeypatch.delenv("DRIFTLINE_DRIFT_THRESHOLD_MODE")
    assert Settings().drift_threshold_mode == "fixed"
    for name, value, says in (("DRIFTLINE_DRIFT_THRESHOLD_MODE", "adaptive", "fixed"),
                              ("DRIFTLINE_DRIFT_FALSE_ALARM_RATE", "0.7", "0.5")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=says):
            Settings()
        monkeypatch.delenv(name)
    assert math.isclose(Settings().drift_false_alarm_rate, 0.01)
