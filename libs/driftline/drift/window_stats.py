"""One window's counts (:class:`ClosedWindow`) and the statistics computed from them (:class:`WindowStats`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from driftline.drift.profile import ReferenceProfile
from driftline.drift.psi import DEFAULT_EPS, FeatureStats, feature_stats

if TYPE_CHECKING:
    from driftline.drift.calibration import ThresholdRule

__all__ = ["ClosedWindow", "WindowStats"]


@dataclass
class WindowStats:
    """The statistics of every feature in one closed window.

    ``threshold_mode`` is how the alarm levels carried by each feature's
    :class:`FeatureStats` were set (``"fixed"`` or ``"calibrated"``; ``""`` when none were).
    """

    model: str | None
    version: Any
    by: str
    start: int
    end: int
    n: int
    min_event_time_ms: int | None
    max_event_time_ms: int | None
    features: dict[str, FeatureStats]
    threshold_mode: str = ""

    @property
    def time_ms(self) -> int | None:
        """Event time at which the window ends: ``end`` for time windows, the largest
        event time in the window for count windows."""
        return self.end if self.by == "time" else self.max_event_time_ms

    @property
    def max_psi(self) -> float:
        """Largest PSI over the features (0 when there are none)."""
        return max((s.psi for s in self.features.values()), default=0.0)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "version": self.version, "by": self.by, "start": self.start, "end": self.end,
            "n": self.n, "min_event_time_ms": self.min_event_time_ms, "max_event_time_ms": self.max_event_time_ms,
            "features": {f: s.to_dict() for f, s in self.features.items()}, "threshold_mode": self.threshold_mode,
        }

    def to_signals(self) -> list[dict]:
        """One row per (feature, statistic), shaped like the ``DriftSignal`` record
        without ``model``, ``model_version`` and ``detected_at``; ``band`` is the
        feature's PSI band on every row of that feature.

        ``threshold_mode`` is on every row of the feature; ``threshold`` is the level of
        the row's own statistic: the PSI threshold on the ``psi`` row, the JS distance
        threshold on the ``js`` row (calibrated mode; there is no fixed JS band), None on
        the others."""
        rows = []
        for f, s in self.features.items():
            values = {"psi": s.psi, "js": s.js, "wasserstein": s.wasserstein, "chi2": s.chi2}
            levels = {"psi": s.threshold, "js": s.js_threshold}
            for stat, v in values.items():
                if v is None or math.isnan(v):
                    continue
                rows.append({"kind": "data", "feature": f, "statistic": stat, "value": float(v), "band": s.band,
                             "window_start": self.start, "window_end": self.end, "n": s.n,
                             "threshold": levels.get(stat), "threshold_mode": s.threshold_mode})
        return rows


@dataclass
class ClosedWindow:
    """Counts of one window that will receive no more events.

    ``start`` and ``end`` are event times (ms) or event indices, per ``by``; ``n`` is
    the number of events counted; ``counts[f]`` the bin counts of feature ``f`` in its
    profile's bins; ``samples[f]`` a uniform sample (without replacement, at most
    ``sample_size`` values, NaN kept) of numeric feature ``f`` in the window.
    """

    by: str
    start: int
    end: int
    n: int
    counts: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]
    min_event_time_ms: int | None = None
    max_event_time_ms: int | None = None
    model: str | None = None
    version: Any = None

    def stats(self, profile: ReferenceProfile, eps: float = DEFAULT_EPS,
              thresholds: ThresholdRule | None = None) -> WindowStats:
        """PSI, band, JS, and Wasserstein (numeric) or chi-square (categorical) per feature,
        with the alarm levels ``thresholds`` sets for this window's size (Bonferroni over
        the window's features in calibrated mode), if given."""
        levels = {} if thresholds is None else thresholds.for_window(profile, self.n, self.counts)
        feats = {
            f: feature_stats(profile.features[f], c, self.samples.get(f), eps=eps, threshold=levels.get(f))
            for f, c in self.counts.items()
        }
        return WindowStats(self.model, self.version, self.by, self.start, self.end, self.n,
                           self.min_event_time_ms, self.max_event_time_ms, feats,
                           "" if thresholds is None else thresholds.mode)
