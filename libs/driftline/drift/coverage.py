"""Label coverage per window of predictions, and label delay statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CoverageWindow", "LabelCoverage", "DELAY_BUCKETS_MS"]


DELAY_BUCKETS_MS = (1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 4 * 3_600_000,
                    12 * 3_600_000, 86_400_000, 3 * 86_400_000, 7 * 86_400_000)
"""Upper bounds of the label-delay histogram buckets (a last bucket is unbounded)."""


@dataclass
class CoverageWindow:
    """Label coverage of the predictions made in ``[start, end)`` (event time, ms).

    ``n_labeled / n_predictions`` is the share of those predictions that got a label so
    far; it grows as late labels arrive. ``delay_histogram[i]`` counts label delays
    (label time − prediction time, negative delays counted as 0) up to
    ``DELAY_BUCKETS_MS[i]``; the last entry counts longer delays. The quantiles are
    read off the histogram and are the upper bound of the bucket holding the quantile
    (``inf`` for the last bucket), so they are conservative.
    """

    start: int
    end: int
    n_predictions: int
    n_labeled: int
    delay_sum_ms: float
    delay_max_ms: float | None
    delay_histogram: list[int] = field(default_factory=list)
    delay_buckets_ms: tuple[int, ...] = DELAY_BUCKETS_MS

    @property
    def coverage(self) -> float | None:
        """Share of predictions with a label (None without predictions); above 1 only
        if labels were counted for predictions never counted here (duplicates)."""
        return self.n_labeled / self.n_predictions if self.n_predictions else None

    @property
    def delay_mean_ms(self) -> float | None:
        return self.delay_sum_ms / self.n_labeled if self.n_labeled else None

    def delay_quantile_ms(self, q: float) -> float | None:
        """Upper bound of the delay bucket holding quantile ``q``."""
        if not self.n_labeled:
            return None
        cum = np.cumsum(self.delay_histogram)
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        return float(self.delay_buckets_ms[i]) if i < len(self.delay_buckets_ms) else math.inf

    def to_dict(self) -> dict:
        p50, p90 = self.delay_quantile_ms(0.5), self.delay_quantile_ms(0.9)
        return {
            "start": self.start, "end": self.end, "n_predictions": self.n_predictions,
            "n_labeled": self.n_labeled, "coverage": self.coverage, "delay_mean_ms": self.delay_mean_ms,
            "delay_max_ms": self.delay_max_ms,
            "delay_p50_ms": None if p50 is None or math.isinf(p50) else p50,
            "delay_p90_ms": None if p90 is None or math.isinf(p90) else p90,
            "delay_histogram": list(self.delay_histogram),
        }


class LabelCoverage:
    """Per-window share of predictions that got labels, and label delay statistics.

    Windows are tumbling, by the *prediction's* event time, so a late label is counted
    in the window of the prediction it labels. Feed predictions with
    :meth:`add_predictions` and joined labels with :meth:`add_labels` (one call per
    label; the label-joiner deduplicates labels). Windows stay open as long as labels
    may still arrive: read them with :meth:`windows` and drop old ones with
    :meth:`evict`.

    Parameters
    ----------
    size_ms
        Window length in ms.
    delay_buckets_ms
        Upper bounds of the delay histogram buckets.

    Examples
    --------
    >>> import numpy as np
    >>> cov = LabelCoverage(size_ms=60_000)
    >>> cov.add_predictions(np.array([1_000, 2_000, 30_000, 61_000]))
    >>> cov.add_labels(prediction_time_ms=np.array([1_000, 30_000]), label_time_ms=np.array([5_000, 200_000]))
    >>> [(w.start, w.n_predictions, w.n_labeled, w.coverage) for w in cov.windows()]
    [(0, 3, 2, 0.6666666666666666), (60000, 1, 0, 0.0)]
    >>> w = cov.windows()[0]
    >>> w.delay_mean_ms, w.delay_max_ms, w.delay_quantile_ms(0.5)
    (87000.0, 170000.0, 10000.0)
    >>> [w.start for w in cov.evict(before_ms=60_000)], [w.start for w in cov.windows()]
    ([0], [60000])

    """

    def __init__(self, size_ms: int, delay_buckets_ms: tuple[int, ...] = DELAY_BUCKETS_MS):
        if size_ms < 1:
            raise ValueError("size_ms must be >= 1")
        self.size_ms = int(size_ms)
        self.delay_buckets_ms = tuple(int(b) for b in delay_buckets_ms)
        self._edges = np.asarray(self.delay_buckets_ms, dtype=np.float64)
        self._w: dict[int, dict] = {}

    def _state(self, k: int) -> dict:
        st = self._w.get(k)
        if st is None:
            st = self._w[k] = {"p": 0, "l": 0, "sum": 0.0, "max": None,
                               "hist": np.zeros(len(self.delay_buckets_ms) + 1, dtype=np.int64)}
        return st

    def add_predictions(self, event_time_ms: np.ndarray) -> None:
        """Count predictions by their event time."""
        k = np.asarray(event_time_ms, dtype=np.int64) // self.size_ms
        uk, c = np.unique(k, return_counts=True)
        for kk, cc in zip(uk.tolist(), c.tolist()):
            self._state(kk)["p"] += cc

    def add_labels(self, prediction_time_ms: np.ndarray, label_time_ms: np.ndarray) -> None:
        """Count labels in the window of their prediction, with their delay."""
        pt = np.asarray(prediction_time_ms, dtype=np.int64)
        delay = np.maximum(np.asarray(label_time_ms, dtype=np.int64) - pt, 0).astype(np.float64)
        if pt.shape != delay.shape:
            raise ValueError("one label time per prediction time")
        if not pt.size:
            return
        k = pt // self.size_ms
        uk, inv = np.unique(k, return_inverse=True)
        nb = len(self.delay_buckets_ms) + 1
        hist = np.bincount(inv * nb + np.searchsorted(self._edges, delay, side="left"),
                           minlength=uk.size * nb).reshape(uk.size, nb)
        n = np.bincount(inv, minlength=uk.size)
        sums = np.bincount(inv, weights=delay, minlength=uk.size)
        maxs = np.full(uk.size, -np.inf)
        np.maximum.at(maxs, inv, delay)
        for i, kk in enumerate(uk.tolist()):
            st = self._state(kk)
            st["l"] += int(n[i])
            st["sum"] += float(sums[i])
            st["max"] = float(maxs[i]) if st["max"] is None else max(st["max"], float(maxs[i]))
            st["hist"] += hist[i]

    def _window(self, k: int) -> CoverageWindow:
        st = self._w[k]
        return CoverageWindow(k * self.size_ms, (k + 1) * self.size_ms, st["p"], st["l"], st["sum"], st["max"],
                              st["hist"].tolist(), self.delay_buckets_ms)

    def windows(self) -> list[CoverageWindow]:
        """Every tracked window, oldest first."""
        return [self._window(k) for k in sorted(self._w)]

    def evict(self, before_ms: int) -> list[CoverageWindow]:
        """Stop tracking the windows that end at or before ``before_ms`` and return them."""
        gone = sorted(k for k in self._w if (k + 1) * self.size_ms <= before_ms)
        out = [self._window(k) for k in gone]
        for k in gone:
            del self._w[k]
        return out

    def snapshot(self) -> dict:
        """JSON-able state."""
        return {"format": 1, "size_ms": self.size_ms, "delay_buckets_ms": list(self.delay_buckets_ms),
                "windows": [{"k": k, "p": s["p"], "l": s["l"], "sum": s["sum"], "max": s["max"],
                             "hist": s["hist"].tolist()} for k, s in sorted(self._w.items())]}

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot` (same window size and buckets)."""
        if snapshot["size_ms"] != self.size_ms or tuple(snapshot["delay_buckets_ms"]) != self.delay_buckets_ms:
            raise ValueError("snapshot was taken with another window size or delay buckets")
        self._w = {int(w["k"]): {"p": int(w["p"]), "l": int(w["l"]), "sum": float(w["sum"]), "max": w["max"],
                                 "hist": np.asarray(w["hist"], dtype=np.int64)} for w in snapshot["windows"]}
