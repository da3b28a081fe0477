"""Calibrated thresholds on streams, through the real counter, statistics and policy.

A stationary stream of 1,000,000 greenhouse-sensor events (three numeric features, one of
them integer-valued, a categorical feature with rare categories, and a score computed from
them) is counted by :class:`WindowedProfileCounter` in count windows of 200, 1,000 and
10,000 events; each closed window's statistics (:meth:`ClosedWindow.stats` with a
calibrated :class:`ThresholdRule`) decide whether it alarms, exactly as the policy does
(any feature with PSI at or above its threshold). The share of windows that alarm must be
at or below the configured false-alarm rate. Then a 0.2-standard-deviation shift of one
feature must be detected by the :class:`AlertPolicy` within two windows of 10,000 events,
which the fixed 0.25 band does not do.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftline.drift import AlertPolicy, ReferenceProfile, WindowedProfileCounter, WindowSpec
from driftline.drift.calibration import ThresholdRule
from driftline.drift.profile import SCORE

RATE = 0.01  # the configured false-alarm rate per window, all features together
REFERENCE_ROWS = 50_000
STREAM_EVENTS = 1_000_000
CHUNK = 100_000
ZONES = np.array(["north", "south", "east", "west", "roof", "cellar", "annex", "lab"])
ZONE_P = np.array([0.45, 0.25, 0.15, 0.1, 0.03, 0.015, 0.004, 0.001])  # three rare zones
TEMPERATURE_SD = 4.0


def greenhouse(n: int, rng: np.random.Generator, temperature_shift_sd: float = 0.0) -> dict[str, np.ndarray]:
    """Sensor readings and the model's score; ``temperature_shift_sd`` moves the temperature by that many SDs."""
    temperature = rng.normal(24.0, TEMPERATURE_SD, n) + temperature_shift_sd * TEMPERATURE_SD
    humidity = rng.beta(5.0, 3.0, n) * 100.0
    vents_open = rng.poisson(2.0, n).astype(np.float64)  # integer-valued: tied quantiles, fewer bins
    zone = rng.choice(ZONES, size=n, p=ZONE_P)
    z = 0.3 * (temperature - 24.0) - 0.04 * (humidity - 62.5) + 0.4 * (vents_open - 2.0) + (zone == "roof")
    return {"temperature_c": temperature, "humidity_pct": humidity, "vents_open": vents_open, "zone": zone,
            SCORE: 1.0 / (1.0 + np.exp(-z))}


def reference(seed: int) -> ReferenceProfile:
    data = greenhouse(REFERENCE_ROWS, np.random.default_rng(seed))
    return ReferenceProfile.fit(numeric={f: data[f] for f in ("temperature_c", "humidity_pct", "vents_open")},
                                categorical={"zone": data["zone"]}, score=data[SCORE], model="greenhouse", version=1)


def alarms(window_stats) -> bool:
    """The policy's test: some feature's PSI is at or above the threshold it carries."""
    return any(s.psi >= s.threshold for s in window_stats.features.values())


def stationary_false_alarms(profile: ReferenceProfile, rule: ThresholdRule, size: int, seed: int) -> tuple[int, int]:
    """(windows that alarmed, windows) over STREAM_EVENTS stationary events in count windows of ``size``."""
    counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=size), sample_size=0)
    rng = np.random.default_rng(seed)
    fired = windows = 0
    for _ in range(STREAM_EVENTS // CHUNK):
        for window in counter.update(greenhouse(CHUNK, rng)):
            stats = window.stats(profile, thresholds=rule)
            assert stats.threshold_mode == "calibrated" and window.n == size
            windows += 1
            fired += alarms(stats)
    return fired, windows


def test_stationary_false_alarms_are_at_or_below_the_configured_rate():
    profile = reference(seed=101)
    rule = ThresholdRule("calibrated", false_alarm_rate=RATE)
    print(f"\nfalse alarms on {STREAM_EVENTS:,} stationary events, {len(profile.features)} features "
          f"(score and a categorical with rare categories included), reference of {REFERENCE_ROWS:,} rows")
    for size, seed in ((200, 1), (1000, 2), (10_000, 3)):
        fired, windows = stationary_false_alarms(profile, rule, size, seed)
        assert windows == STREAM_EVENTS // size
        print(f"  window {size:>6,}: {fired:>3} of {windows:>5,} windows alarmed: observed rate {fired / windows:.4f}, "
              f"configured {RATE}")
        assert fired / windows <= RATE


def test_a_fifth_of_a_standard_deviation_is_caught_within_two_windows_of_10000():
    profile = reference(seed=202)
    size, shift_at = 10_000, 205_000  # the shift starts half-way through a window
    spec = WindowSpec("tumbling", "count", size=size)
    calibrated = ThresholdRule("calibrated", false_alarm_rate=RATE)
    fixed = ThresholdRule()  # 0.25 / 0.10
    policies = {"calibrated": AlertPolicy(consecutive_windows=1, cooldown_ms=0),
                "fixed": AlertPolicy(consecutive_windows=1, cooldown_ms=0)}
    counter = WindowedProfileCounter(profile, spec, sample_size=0)
    rng = np.random.default_rng(7)
    before = greenhouse(shift_at, rng)
    after = greenhouse(300_000 - shift_at, rng, temperature_shift_sd=0.2)
    columns = {f: np.concatenate([before[f], after[f]]) for f in before}
    times = np.arange(300_000, dtype=np.int64) * 10  # one event every 10 ms

    decided: dict[str, int] = {}
    shifted_psi = []
    for window in counter.update(columns, event_time_ms=times):
        for mode, rule in (("calibrated", calibrated), ("fixed", fixed)):
            stats = window.stats(profile, thresholds=rule)
            if window.end > shift_at:
                shifted_psi.append(stats.features["temperature_c"].psi)
            decision = policies[mode].observe_window("greenhouse", 1, stats)
            if decision is not None and mode not in decided:
                decided[mode] = window.end
                assert any(s.feature == "temperature_c" for s in decision.signals)
    first_shifted_window_end = (shift_at // size + 1) * size
    assert decided.get("calibrated") is not None and decided["calibrated"] <= first_shifted_window_end + size
    assert "fixed" not in decided  # the 0.25 band never saw it
    assert max(shifted_psi) < 0.25
    level = calibrated.for_window(profile, size)["temperature_c"].psi
    print(f"\n0.2 SD shift at event {shift_at:,}: calibrated (rate {RATE}) fired at the window ending at "
          f"{decided['calibrated']:,} (threshold {level:.4f}); PSI after the shift {min(shifted_psi):.4f} to "
          f"{max(shifted_psi):.4f}, never 0.25: the fixed band did not fire")
