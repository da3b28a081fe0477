"""Streaming windowed bin counts of a model version's features and score against its reference profile."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

from driftline.drift.profile import ReferenceProfile
from driftline.drift.window_spec import WindowSpec
from driftline.drift.window_stats import ClosedWindow

__all__ = ["EventCounts", "WindowedProfileCounter"]

_NO_TIME = -(2**62)  # "no watermark yet": far below any event time, with room to subtract lateness
_OWN = object()  # update()'s default: the counter keeps its own watermark (the largest event time seen)


@dataclass(frozen=True)
class EventCounts:
    """Events of one window that its PSI does not show: ``late_events`` arrived after it
    closed, ``ahead_events`` arrived far ahead of the watermark (counted in it all the
    same). Both are cumulative for the window."""

    start: int
    end: int
    late_events: int
    ahead_events: int


@dataclass
class _Open:
    n: int
    counts: dict[str, np.ndarray]
    keys: np.ndarray
    samples: dict[str, np.ndarray]
    tmin: int | None = None
    tmax: int | None = None
    ahead: int = 0  # events of this window that arrived far ahead of the watermark


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


def _floats_to_text(a: np.ndarray) -> str:
    """Float64 values, exactly (NaN included), as base64 text: a thousand floats encode in
    microseconds, where JSON numbers take milliseconds."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _floats_from(saved) -> np.ndarray:
    """:func:`_floats_to_text`'s text, or a list with None for NaN (snapshot formats 1 and 2)."""
    if isinstance(saved, str):
        return np.frombuffer(base64.b64decode(saved), dtype="<f8").astype(np.float64)
    return np.asarray([math.nan if v is None else v for v in saved], dtype=np.float64)


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

    **Watermark.** By default the counter keeps its own watermark, the largest event
    time it saw (one ordered stream). A detector reading several partitions passes the
    watermark in force instead (:class:`~driftline.drift.watermark.PartitionWatermarks`):
    ``update(..., watermark=w, ahead=mask)`` judges the batch against ``w`` and
    :meth:`advance` closes the windows the next watermark passed.

    **Late and ahead events are counted, never dropped silently.** An event whose window
    already closed (``end + allowed_lateness <= watermark``) is counted per window in
    :meth:`take_event_counts` (``late_events``) and in :attr:`late_events`. An event
    flagged ahead (``ahead`` mask) is counted in its windows like any other, and also in
    their ``ahead_events``. Memory: per-window late counters are kept for the
    ``max_late_windows`` most recent windows (by start) that had late events; an older
    one is forgotten, so a late event for a window older than all of those restarts
    its count (the totals :attr:`late_events` stay exact).

    :meth:`snapshot` returns a JSON-able dict with the open windows, the watermark, the
    late counters and the sampler's random state; :meth:`restore` on a new counter resumes exactly, so
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
    max_late_windows
        How many windows' late counters are kept (see above).

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.drift.profile import ReferenceProfile
    >>> from driftline.drift import WindowSpec, WindowedProfileCounter

    >>> rng = np.random.default_rng(7)
    >>> profile = ReferenceProfile.fit(numeric={"x": rng.normal(size=10_000)})
    >>> counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "time", size=1000, allowed_lateness=100))

    >>> t = np.array([0, 400, 999, 1000, 950, 1200, 1099, 5, 2500])
    >>> closed = counter.update({"x": rng.normal(size=t.size)}, event_time_ms=t)
    >>> [(w.start, w.end, w.n) for w in closed]
    [(0, 1000, 4), (1000, 2000, 3)]
    >>> counter.late_events   # the event at 5 ms came after the watermark passed 1100
    1
    >>> counter.take_event_counts()   # counted in the window it belonged to, not dropped
    [EventCounts(start=0, end=1000, late_events=1, ahead_events=0)]
    >>> s = closed[0].stats(profile).features["x"]
    >>> s.band in ("stable", "monitor", "act"), s.n
    (True, 4)

    """

    def __init__(self, profile: ReferenceProfile, spec: WindowSpec, sample_size: int = 1000, seed: int = 0,
                 max_late_windows: int = 10_000):
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
        self.max_late_windows = int(max_late_windows)
        self._late: dict[int, int] = {}  # window index -> late events so far (bounded: max_late_windows)
        self._late_events = 0
        self._ahead_events = 0
        # Windows whose counts moved since take_event_counts, with their counts then: a window's
        # row is written even if its counter was forgotten or the window closed meanwhile.
        self._changed: dict[int, tuple[int, int]] = {}

    # -- results ------------------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        """Events received so far (late ones included)."""
        return self._n_seen

    @property
    def late_events(self) -> int:
        """Events that arrived after at least one of their windows had closed, and so
        were not counted in its statistics (for tumbling windows: in no window's
        statistics); each is in its window's ``late_events`` (:meth:`take_event_counts`)."""
        return self._late_events

    @property
    def ahead_events(self) -> int:
        """Events flagged ahead of the watermark (``update(..., ahead=...)``)."""
        return self._ahead_events

    @property
    def watermark(self) -> int | None:
        """The watermark windows close on (time windows): the one passed in, or the
        largest event time seen; None before the first."""
        return self._watermark

    @property
    def open_windows(self) -> list[tuple[int, int]]:
        """``(start, end)`` of the windows still open, in order."""
        hop, size = self.spec.hop, self.spec.size
        return [(k * hop, k * hop + size) for k in sorted(self._open)]

    # -- streaming ----------------------------------------------------------------------

    def update(self, columns: dict[str, np.ndarray], event_time_ms: np.ndarray | None = None, *,
               watermark=_OWN, ahead: np.ndarray | None = None) -> list[ClosedWindow]:
        """Count one batch and return the windows that closed, oldest first.

        Parameters
        ----------
        columns
            One array per profiled feature (extra columns are ignored), all of the
            batch's length, in stream order.
        event_time_ms
            Event times in ms; required for time windows, optional for count windows
            (where it only fills ``min_event_time_ms`` / ``max_event_time_ms``).
        watermark
            Time windows: the watermark in force while this batch arrived (None: none yet);
            an event is late if one of its windows ends at or before it minus the allowed
            lateness. Left out, the counter uses the largest event time seen before each event.
        ahead
            Events flagged ahead of the watermark: counted in their windows, and in
            their windows' ``ahead_events``; they never move the counter's own watermark.
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
        if ahead is not None:
            ahead = np.asarray(ahead, dtype=bool)
            if ahead.shape != (n,):
                raise ValueError("ahead must have one entry per row")
            if not ahead.any():
                ahead = None
        own = watermark is _OWN
        if not own and watermark is not None:
            self._watermark = int(watermark) if self._watermark is None else max(self._watermark, int(watermark))
        if n == 0:
            return [] if own else self._close_ready()

        spec = self.spec
        hop, size = spec.hop, int(spec.size)
        if spec.by == "time":
            coord = t
            if own:
                prev = np.empty(n, dtype=np.int64)
                prev[0] = _NO_TIME if self._watermark is None else self._watermark
                prev[1:] = t[:-1] if ahead is None else np.where(ahead[:-1], _NO_TIME, t[:-1])
                before = np.maximum.accumulate(prev)  # watermark seen by each event on arrival
            else:
                before = _NO_TIME if self._watermark is None else self._watermark
            deadline = before - spec.allowed_lateness  # a window ending at or before this is closed
        else:
            coord = np.arange(self._n_seen, self._n_seen + n, dtype=np.int64)

        # Assign every event to its windows (one vector pass per overlap, not per event).
        k_last = coord // hop
        late = np.zeros(n, dtype=bool)
        ev_parts, k_parts, k_late = [], [], []
        for j in range(-(-size // hop)):
            k = k_last - j
            end = k * hop + size
            ok = end > coord
            if spec.by == "time":
                closed = ok & (end <= deadline)
                if closed.any():
                    late |= closed
                    k_late.append(k[closed])
                    ok &= ~closed
            idx = np.flatnonzero(ok)
            ev_parts.append(idx)
            k_parts.append(k[idx])
        self._late_events += int(late.sum())
        if k_late:
            self._count_late(np.concatenate(k_late))
        self._n_seen += n
        if spec.by == "time" and own:
            on_time = t if ahead is None else t[~ahead]
            if on_time.size:
                tmax = int(on_time.max())
                self._watermark = tmax if self._watermark is None else max(self._watermark, tmax)

        keys = self._rng.random(n) if (self.sample_size and self._numeric) else None
        ev = np.concatenate(ev_parts)
        if ev.size:
            # tumbling windows with nobody late: every event, in order, once
            everyone = hop == size and ev.size == n
            self._accumulate(columns, t, keys, ev, np.concatenate(k_parts), everyone)
        if ahead is not None:
            self._ahead_events += int(ahead.sum())
            self._count_ahead(np.concatenate([kp[ahead[ep]] for ep, kp in zip(ev_parts, k_parts)]))
        return self._close_ready()

    def advance(self, watermark: int | None) -> list[ClosedWindow]:
        """Move the watermark (never back) and return the windows it closed, oldest first."""
        if watermark is None or self.spec.by != "time":
            return []
        self._watermark = int(watermark) if self._watermark is None else max(self._watermark, int(watermark))
        return self._close_ready()

    def take_event_counts(self) -> list[EventCounts]:
        """The windows whose late or ahead count moved since the last call, with their
        cumulative counts (a row to write, or rewrite), oldest first. Call it after every
        batch: it holds one entry per window touched since the last call."""
        hop, size = self.spec.hop, int(self.spec.size)
        out = [EventCounts(k * hop, k * hop + size, late, ahead) for k, (late, ahead) in sorted(self._changed.items())]
        self._changed.clear()
        return out

    def _count_late(self, windows: np.ndarray) -> None:
        ks, counts = np.unique(windows, return_counts=True)
        for k, c in zip(ks.tolist(), counts.tolist()):
            self._late[k] = self._late.get(k, 0) + c
            st = self._open.get(k)
            self._changed[k] = (self._late[k], 0 if st is None else st.ahead)
        if len(self._late) > self.max_late_windows:  # forget the oldest windows' counters
            for k in sorted(self._late)[:len(self._late) - self.max_late_windows]:
                del self._late[k]

    def _count_ahead(self, windows: np.ndarray) -> None:
        ks, counts = np.unique(windows, return_counts=True)
        for k, c in zip(ks.tolist(), counts.tolist()):
            self._open[k].ahead += c
            self._changed[k] = (self._late.get(k, 0), self._open[k].ahead)

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
            if self._watermark is None:
                return []
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
        """JSON-able state: open windows, counters, watermark and sampler state (the samples and
        their keys as base64 float64, format 3; formats 1 and 2 held JSON lists and still restore)."""
        return {
            "format": 3,
            "spec": self.spec.to_dict(),
            "layout": self._layout(),
            "sample_size": self.sample_size,
            "n_seen": self._n_seen,
            "watermark": self._watermark,
            "late_events": self._late_events,
            "ahead_events": self._ahead_events,
            "late": [[k, c] for k, c in sorted(self._late.items())],
            "changed": [[k, late, ahead] for k, (late, ahead) in sorted(self._changed.items())],
            "rng": self._rng.bit_generator.state,
            "open": [
                {
                    "k": k, "n": st.n, "tmin": st.tmin, "tmax": st.tmax, "ahead": st.ahead,
                    "counts": {f: c.tolist() for f, c in st.counts.items()},
                    "keys": _floats_to_text(st.keys),
                    "samples": {f: _floats_to_text(s) for f, s in st.samples.items()},
                }
                for k, st in sorted(self._open.items())
            ],
        }

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot`; the spec, the profile's bins and the sample
        size must be the ones the snapshot was taken with."""
        if snapshot.get("format") not in (1, 2, 3):
            raise ValueError(f"unknown snapshot format {snapshot.get('format')!r}")
        if WindowSpec.from_dict(snapshot["spec"]) != self.spec:
            raise ValueError("snapshot was taken with another window spec")
        if snapshot["layout"] != self._layout():
            raise ValueError("snapshot was taken with another profile (features or bins differ)")
        if snapshot["sample_size"] != self.sample_size:
            raise ValueError("snapshot was taken with another sample_size")
        self._n_seen = int(snapshot["n_seen"])
        self._watermark = snapshot["watermark"]
        # Format 1 (before per-window late counters) had only the total, as late_dropped.
        self._late_events = int(snapshot.get("late_events", snapshot.get("late_dropped", 0)))
        self._ahead_events = int(snapshot.get("ahead_events", 0))
        self._late = {int(k): int(c) for k, c in snapshot.get("late", [])}
        self._changed = {int(k): (int(late), int(ahead)) for k, late, ahead in snapshot.get("changed", [])}
        self._rng.bit_generator.state = snapshot["rng"]
        self._open = {}
        for w in snapshot["open"]:
            self._open[int(w["k"])] = _Open(
                n=int(w["n"]),
                counts={f: np.asarray(c, dtype=np.int64) for f, c in w["counts"].items()},
                keys=_floats_from(w["keys"]),
                samples={f: _floats_from(s) for f, s in w["samples"].items()},
                tmin=w["tmin"], tmax=w["tmax"], ahead=int(w.get("ahead", 0)),
            )
