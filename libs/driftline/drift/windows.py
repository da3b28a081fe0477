"""Streaming windowed bin counts against a reference profile, and label coverage per window."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.drift.profile import FeatureProfile, ReferenceProfile
from driftline.drift.psi import DEFAULT_EPS, FeatureStats, feature_stats

__all__ = [
    "WindowSpec",
    "ClosedWindow",
    "WindowStats",
    "WindowedProfileCounter",
    "CoverageWindow",
    "LabelCoverage",
    "DELAY_BUCKETS_MS",
]

_NO_TIME = -(2**62)  # "no watermark yet": far below any event time, with room to subtract lateness


@dataclass(frozen=True)
class WindowSpec:
    """How a stream is cut into windows.

    Window ``k`` covers ``[k * step, k * step + size)`` in the window coordinate: the
    event time in milliseconds (``by="time"``, windows aligned on the epoch, as in Kafka
    Streams and Flink) or the event's index in the stream counting from 0
    (``by="count"``). Tumbling windows have ``step == size``; hopping windows overlap
    and every event belongs to ``ceil(size / step)`` windows (``step <= size``).
    Because windows are aligned on multiples of ``step``, the first hopping windows of
    a stream start before its first event and hold fewer events
    (``AlertPolicy(min_events=...)`` ignores such small windows).

    ``allowed_lateness`` (ms, time windows only): the watermark is the largest event
    time seen so far; window ``[s, e)`` closes (is emitted, and accepts nothing more)
    once ``watermark >= e + allowed_lateness``. An out-of-order event still counts in
    every window of it that is open; for a window already closed it is dropped and
    counted in :attr:`WindowedProfileCounter.late_dropped`. The watermark only moves
    forward, so one event stamped far in the future makes everything after it late:
    reject clock-skewed events before they get here.

    Examples
    --------
    >>> WindowSpec(kind="hopping", by="time", size=60_000, step=15_000, allowed_lateness=5_000).hop
    15000
    >>> WindowSpec(kind="tumbling", by="count", size=1000).hop
    1000

    """

    kind: str = "tumbling"
    by: str = "count"
    size: int = 10_000
    step: int | None = None
    allowed_lateness: int = 0

    def __post_init__(self):
        if self.kind not in ("tumbling", "hopping"):
            raise ValueError(f"kind must be 'tumbling' or 'hopping', got {self.kind!r}")
        if self.by not in ("count", "time"):
            raise ValueError(f"by must be 'count' or 'time', got {self.by!r}")
        if int(self.size) != self.size or self.size < 1:
            raise ValueError("size must be a positive integer")
        if self.kind == "tumbling":
            if self.step not in (None, self.size):
                raise ValueError("a tumbling window's step is its size")
        else:
            if self.step is None or int(self.step) != self.step or not 1 <= self.step <= self.size:
                raise ValueError("a hopping window needs an integer step with 1 <= step <= size")
        if self.allowed_lateness < 0:
            raise ValueError("allowed_lateness must be >= 0")
        if self.by == "count" and self.allowed_lateness:
            raise ValueError("allowed_lateness applies to time windows only")

    @property
    def hop(self) -> int:
        """Distance between the starts of two consecutive windows."""
        return int(self.size if self.step is None else self.step)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "by": self.by, "size": int(self.size), "step": self.step,
                "allowed_lateness": int(self.allowed_lateness)}

    @classmethod
    def from_dict(cls, d: dict) -> WindowSpec:
        return cls(**d)


@dataclass
class WindowStats:
    """The statistics of every feature in one closed window."""

    model: str | None
    version: Any
    by: str
    start: int
    end: int
    n: int
    min_event_time_ms: int | None
    max_event_time_ms: int | None
    features: dict[str, FeatureStats]

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
            "features": {f: s.to_dict() for f, s in self.features.items()},
        }

    def to_signals(self) -> list[dict]:
        """One row per (feature, statistic), shaped like the ``DriftSignal`` record
        without ``model``, ``model_version`` and ``detected_at``; ``band`` is the
        feature's PSI band on every row of that feature."""
        rows = []
        for f, s in self.features.items():
            values = {"psi": s.psi, "js": s.js, "wasserstein": s.wasserstein, "chi2": s.chi2}
            for stat, v in values.items():
                if v is None or math.isnan(v):
                    continue
                rows.append({"kind": "data", "feature": f, "statistic": stat, "value": float(v), "band": s.band,
                             "window_start": self.start, "window_end": self.end, "n": s.n})
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

    def stats(self, profile: ReferenceProfile, eps: float = DEFAULT_EPS) -> WindowStats:
        """PSI, band, JS, and Wasserstein (numeric) or chi-square (categorical) per feature."""
        feats = {
            f: feature_stats(profile.features[f], c, self.samples.get(f), eps=eps)
            for f, c in self.counts.items()
        }
        return WindowStats(self.model, self.version, self.by, self.start, self.end, self.n,
                           self.min_event_time_ms, self.max_event_time_ms, feats)


@dataclass
class _Open:
    n: int
    counts: dict[str, np.ndarray]
    keys: np.ndarray
    samples: dict[str, np.ndarray]
    tmin: int | None = None
    tmax: int | None = None


def _group(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(win, return_inverse=True)`` without sorting when the range is small."""
    lo, hi = int(win.min()), int(win.max())
    if lo == hi:
        return np.array([lo]), np.zeros(win.size, dtype=np.int64)
    if hi - lo <= 4 * win.size + 64:
        rel = win - lo
        present = np.bincount(rel) > 0
        remap = np.cumsum(present) - 1
        return np.flatnonzero(present) + lo, remap[rel]
    uk, inv = np.unique(win, return_inverse=True)
    return uk, inv.ravel()


def _nan_to_none(a: np.ndarray) -> list:
    return [None if math.isnan(v) else v for v in a.tolist()]


class WindowedProfileCounter:
    """Bin counts per window and per feature of one model version's live stream.

    Every batch is binned with the profile's fixed bins (``searchsorted`` / category
    lookup) and counted into its windows with one ``bincount`` per feature, so the cost
    per event is a few vector operations whatever the batch size. Windows are emitted
    by :meth:`update` as soon as they close (see :class:`WindowSpec`); windows that
    received no event are never emitted.

    Each numeric feature also keeps a uniform sample of at most ``sample_size`` raw
    values per window, for the Wasserstein distance: every event draws a random key
    and a window keeps the events with the smallest keys (bottom-k sampling), so the
    sample does not depend on how the stream was cut into batches.

    :meth:`snapshot` returns a JSON-able dict with the open windows, the watermark and
    the sampler's random state; :meth:`restore` on a new counter resumes exactly, so
    a restart mid-window loses no counts.

    Parameters
    ----------
    profile
        Reference profile of the model version; its features (the score included, as
        ``"__score__"``) are the columns expected by :meth:`update`.
    spec
        The windows.
    sample_size
        Per-window sample size of numeric features (0 disables samples).
    seed
        Seed of the sampler.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.drift.profile import ReferenceProfile
    >>> from driftline.drift.windows import WindowSpec, WindowedProfileCounter

    >>> rng = np.random.default_rng(7)
    >>> profile = ReferenceProfile.fit(numeric={"x": rng.normal(size=10_000)})
    >>> counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "time", size=1000, allowed_lateness=100))

    >>> t = np.array([0, 400, 999, 1000, 950, 1200, 1099, 5, 2500])
    >>> closed = counter.update({"x": rng.normal(size=t.size)}, event_time_ms=t)
    >>> [(w.start, w.end, w.n) for w in closed]
    [(0, 1000, 4), (1000, 2000, 3)]
    >>> counter.late_dropped   # the event at 5 ms came after the watermark passed 1100
    1
    >>> s = closed[0].stats(profile).features["x"]
    >>> s.band in ("stable", "monitor", "act"), s.n
    (True, 4)

    """

    def __init__(self, profile: ReferenceProfile, spec: WindowSpec, sample_size: int = 1000, seed: int = 0):
        self.profile = profile
        self.spec = spec
        self.sample_size = int(sample_size)
        self.seed = seed
        self._names = list(profile.features)
        self._numeric = [f for f in self._names if profile.features[f].kind == "numeric"]
        self._rng = np.random.default_rng(seed)
        self._open: dict[int, _Open] = {}
        self._n_seen = 0
        self._watermark: int | None = None
        self._late_dropped = 0

    # -- results ------------------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        """Events received so far (late ones included)."""
        return self._n_seen

    @property
    def late_dropped(self) -> int:
        """Events that arrived after at least one of their windows had closed, and so
        were not counted in it (for tumbling windows: events not counted at all)."""
        return self._late_dropped

    @property
    def watermark(self) -> int | None:
        """Largest event time seen (time windows), or None before the first event."""
        return self._watermark

    @property
    def open_windows(self) -> list[tuple[int, int]]:
        """``(start, end)`` of the windows still open, in order."""
        hop, size = self.spec.hop, self.spec.size
        return [(k * hop, k * hop + size) for k in sorted(self._open)]

    # -- streaming ----------------------------------------------------------------------

    def update(self, columns: dict[str, np.ndarray], event_time_ms: np.ndarray | None = None) -> list[ClosedWindow]:
        """Count one batch and return the windows that closed, oldest first.

        Parameters
        ----------
        columns
            One array per profiled feature (extra columns are ignored), all of the
            batch's length, in stream order.
        event_time_ms
            Event times in ms; required for time windows, optional for count windows
            (where it only fills ``min_event_time_ms`` / ``max_event_time_ms``).
        """
        missing = [f for f in self._names if f not in columns]
        if missing:
            raise ValueError(f"missing columns: {missing}")
        lengths = {len(columns[f]) for f in self._names}
        n = lengths.pop() if lengths else (0 if event_time_ms is None else len(event_time_ms))
        if lengths:
            raise ValueError("columns differ in length")
        t = None if event_time_ms is None else np.asarray(event_time_ms, dtype=np.int64)
        if t is not None and t.shape != (n,):
            raise ValueError("event_time_ms must have one entry per row")
        if self.spec.by == "time" and t is None:
            raise ValueError("time windows need event_time_ms")
        if n == 0:
            return []

        spec = self.spec
        hop, size = spec.hop, int(spec.size)
        if spec.by == "time":
            coord = t
            prev = np.empty(n, dtype=np.int64)
            prev[0] = _NO_TIME if self._watermark is None else self._watermark
            prev[1:] = t[:-1]
            before = np.maximum.accumulate(prev)  # watermark seen by each event on arrival
            deadline = before - spec.allowed_lateness  # a window ending at or before this is closed
        else:
            coord = np.arange(self._n_seen, self._n_seen + n, dtype=np.int64)

        # Assign every event to its windows (one vector pass per overlap, not per event).
        k_last = coord // hop
        late = np.zeros(n, dtype=bool)
        ev_parts, k_parts = [], []
        for j in range(-(-size // hop)):
            k = k_last - j
            end = k * hop + size
            ok = end > coord
            if spec.by == "time":
                closed = ok & (end <= deadline)
                late |= closed
                ok &= ~closed
            idx = np.flatnonzero(ok)
            ev_parts.append(idx)
            k_parts.append(k[idx])
        self._late_dropped += int(late.sum())
        self._n_seen += n
        if spec.by == "time":
            tmax = int(t.max())
            self._watermark = tmax if self._watermark is None else max(self._watermark, tmax)

        keys = self._rng.random(n) if (self.sample_size and self._numeric) else None
        ev = np.concatenate(ev_parts)
        if ev.size:
            # tumbling windows with nobody late: every event, in order, once
            everyone = hop == size and ev.size == n
            self._accumulate(columns, t, keys, ev, np.concatenate(k_parts), everyone)
        return self._close_ready()

    def flush(self) -> list[ClosedWindow]:
        """Close and return every open window (end of stream, or shutdown without a
        snapshot). Events arriving afterwards start new windows."""
        out = [self._emit(k) for k in sorted(self._open)]
        self._open.clear()
        return out

    def _accumulate(self, columns, t, keys, ev, win, everyone) -> None:
        uk, inv = _group(win)
        u = uk.size
        if u == 1:
            ev_sorted, bounds = ev, np.array([0, ev.size])
        else:
            order = np.argsort(inv, kind="stable")
            ev_sorted = ev[order]
            bounds = np.searchsorted(inv[order], np.arange(u + 1))
        n_per = np.diff(bounds)
        counts = {}
        for f in self._names:
            fp = self.profile.features[f]
            b = fp.bin_indices(columns[f])
            if not everyone:
                b = b[ev]
            if u == 1:
                counts[f] = np.bincount(b, minlength=fp.n_bins)[None, :]
            else:
                counts[f] = np.bincount(inv * fp.n_bins + b, minlength=u * fp.n_bins).reshape(u, fp.n_bins)
        if t is not None:
            t_sorted = t if (everyone and u == 1) else t[ev_sorted]
            tmins = np.minimum.reduceat(t_sorted, bounds[:-1])
            tmaxs = np.maximum.reduceat(t_sorted, bounds[:-1])
        if keys is not None:
            xs = {f: np.asarray(columns[f], dtype=np.float64) for f in self._numeric}
        for i, k in enumerate(uk.tolist()):
            st = self._open.get(k)
            if st is None:
                st = self._open[k] = _Open(
                    0, {f: np.zeros(self.profile.features[f].n_bins, dtype=np.int64) for f in self._names},
                    np.empty(0), {f: np.empty(0) for f in self._numeric},
                )
            st.n += int(n_per[i])
            for f in self._names:
                st.counts[f] += counts[f][i]
            if t is not None:
                lo, hi = int(tmins[i]), int(tmaxs[i])
                st.tmin = lo if st.tmin is None else min(st.tmin, lo)
                st.tmax = hi if st.tmax is None else max(st.tmax, hi)
            if keys is not None:
                self._sample(st, ev_sorted[bounds[i]:bounds[i + 1]], keys, xs)

    def _sample(self, st: _Open, seg: np.ndarray, keys: np.ndarray, xs: dict[str, np.ndarray]) -> None:
        m = self.sample_size
        new_keys = keys[seg]
        if st.keys.size >= m:  # full: only keys below the current largest kept key can enter
            mask = new_keys < st.keys[-1]
            if not mask.any():
                return
            seg, new_keys = seg[mask], new_keys[mask]
        if new_keys.size > m:  # pre-select the batch's own bottom m
            sel = np.argpartition(new_keys, m - 1)[:m]
            seg, new_keys = seg[sel], new_keys[sel]
        all_keys = np.concatenate([st.keys, new_keys])
        if all_keys.size > m:
            sel = np.argpartition(all_keys, m - 1)[:m]
        else:
            sel = np.arange(all_keys.size)
        sel = sel[np.argsort(all_keys[sel], kind="stable")]  # canonical order: by key, ascending
        st.keys = all_keys[sel]
        st.samples = {f: np.concatenate([st.samples[f], xs[f][seg]])[sel] for f in self._numeric}

    def _close_ready(self) -> list[ClosedWindow]:
        hop, size = self.spec.hop, int(self.spec.size)
        if self.spec.by == "time":
            limit = self._watermark - self.spec.allowed_lateness
        else:
            limit = self._n_seen
        ready = sorted(k for k in self._open if k * hop + size <= limit)
        out = [self._emit(k) for k in ready]
        for k in ready:
            del self._open[k]
        return out

    def _emit(self, k: int) -> ClosedWindow:
        st = self._open[k]
        hop = self.spec.hop
        return ClosedWindow(
            by=self.spec.by, start=k * hop, end=k * hop + int(self.spec.size), n=st.n,
            counts={f: c.copy() for f, c in st.counts.items()},
            samples={f: s.copy() for f, s in st.samples.items()},
            min_event_time_ms=st.tmin, max_event_time_ms=st.tmax,
            model=self.profile.model, version=self.profile.version,
        )

    # -- state --------------------------------------------------------------------------

    def _layout(self) -> dict[str, int]:
        return {f: self.profile.features[f].n_bins for f in self._names}

    def snapshot(self) -> dict:
        """JSON-able state: open windows, counters, watermark and sampler state."""
        return {
            "format": 1,
            "spec": self.spec.to_dict(),
            "layout": self._layout(),
            "sample_size": self.sample_size,
            "n_seen": self._n_seen,
            "watermark": self._watermark,
            "late_dropped": self._late_dropped,
            "rng": self._rng.bit_generator.state,
            "open": [
                {
                    "k": k, "n": st.n, "tmin": st.tmin, "tmax": st.tmax,
                    "counts": {f: c.tolist() for f, c in st.counts.items()},
                    "keys": st.keys.tolist(),
                    "samples": {f: _nan_to_none(s) for f, s in st.samples.items()},
                }
                for k, st in sorted(self._open.items())
            ],
        }

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot`; the spec, the profile's bins and the sample
        size must be the ones the snapshot was taken with."""
        if snapshot.get("format") != 1:
            raise ValueError(f"unknown snapshot format {snapshot.get('format')!r}")
        if WindowSpec.from_dict(snapshot["spec"]) != self.spec:
            raise ValueError("snapshot was taken with another window spec")
        if snapshot["layout"] != self._layout():
            raise ValueError("snapshot was taken with another profile (features or bins differ)")
        if snapshot["sample_size"] != self.sample_size:
            raise ValueError("snapshot was taken with another sample_size")
        self._n_seen = int(snapshot["n_seen"])
        self._watermark = snapshot["watermark"]
        self._late_dropped = int(snapshot["late_dropped"])
        self._rng.bit_generator.state = snapshot["rng"]
        self._open = {}
        for w in snapshot["open"]:
            self._open[int(w["k"])] = _Open(
                n=int(w["n"]),
                counts={f: np.asarray(c, dtype=np.int64) for f, c in w["counts"].items()},
                keys=np.asarray(w["keys"], dtype=np.float64),
                samples={f: np.asarray([math.nan if v is None else v for v in s], dtype=np.float64)
                         for f, s in w["samples"].items()},
                tmin=w["tmin"], tmax=w["tmax"],
            )


# -- label coverage ----------------------------------------------------------------------

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
