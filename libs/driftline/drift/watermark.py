"""Event-time watermarks over the partitions a detector reads: minimum over active partitions,
idle partitions left out, events far ahead kept from moving it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PartitionWatermarks"]


@dataclass
class _Partition:
    high: int | None = None  # largest event time accepted on this partition (its own watermark)
    last_wall_ms: int = 0  # wall time of its latest record
    run_events: int = 0  # consecutive events ahead, the latest run
    run_since_wall_ms: int = 0  # wall time of the run's first event
    run_min: int | None = None  # smallest event time of the run: where a jump lands


class PartitionWatermarks:
    """The event-time watermark of a stream read from several partitions.

    Each partition keeps its own watermark: the largest event time it delivered. The
    watermark in force is the **minimum** over the partitions, so one partition's
    progress never closes windows for another that is behind (Flink and Kafka Streams
    do the same). Two things keep that minimum from stalling or running away:

    * **Idle partitions.** A partition that delivered nothing for ``idle_timeout_ms`` of
      wall time is left out of the minimum (Flink's ``withIdleness``). When every
      partition is idle the watermark is the **maximum** of theirs: the stream has
      stopped, and what it delivered may close. When such a stream resumes (and after a
      restore) every partition gets a fresh idle timeout: a pause of the whole stream is
      no partition's own silence. A partition declared with
      :meth:`expect` that has not delivered yet holds the watermark back until it is
      idle too.
    * **Events far ahead.** An event later than its partition's watermark by more than
      ``max_skew_ms`` (for a partition's first event: than the most advanced
      partition's watermark), or later than the wall clock plus ``max_skew_ms``, is
      *ahead*: it cannot move any watermark. :meth:`observe` flags it so the caller
      counts it in its own window (which closes when the watermark really gets there)
      and reports it. A partition whose every event has been ahead for
      ``idle_timeout_ms`` of wall time (at least two events) has moved on, as a
      producer back after a long gap does: its watermark jumps to the earliest event
      of that run (never beyond the wall clock plus ``max_skew_ms``). A burst of
      far-future events followed by normal ones never jumps; nor does an event beyond
      the wall clock plus ``max_skew_ms``.

    The watermark in force never goes back. :meth:`snapshot` / :meth:`restore` carry
    all of it across restarts. The common case (no event ahead) is a few numpy
    operations per partition present in a batch, with no loop over events.

    Parameters
    ----------
    max_skew_ms
        How far ahead of its partition's watermark an event may be and still move it.
    idle_timeout_ms
        Wall time without records after which a partition no longer holds the watermark.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.drift.watermark import PartitionWatermarks
    >>> wm = PartitionWatermarks(max_skew_ms=10_000, idle_timeout_ms=60_000)
    >>> wall = 1_800_000_000_000

    Two partitions; the slower one sets the watermark:

    >>> wm.observe(np.array([0, 0, 1]), np.array([1_000, 5_000, 2_000]), now_ms=wall).tolist()
    [False, False, False]
    >>> wm.current(wall)
    2000

    An event 9,000 s ahead of its partition does not move it; it is flagged:

    >>> wm.observe(np.array([1, 1]), np.array([9_000_000, 3_000]), now_ms=wall).tolist()
    [True, False]
    >>> wm.current(wall), wm.ahead_events
    (3000, 1)

    Partition 1 falls silent for a minute while partition 0 goes on: partition 0 alone
    sets the watermark.

    >>> wm.observe(np.array([0]), np.array([6_000]), now_ms=wall + 30_000).tolist()
    [False]
    >>> wm.observe(np.array([0]), np.array([7_000]), now_ms=wall + 61_000).tolist()
    [False]
    >>> wm.current(wall + 61_000)
    7000

    """

    def __init__(self, max_skew_ms: int = 3_600_000, idle_timeout_ms: int = 60_000):
        if max_skew_ms < 0 or idle_timeout_ms < 0:
            raise ValueError("max_skew_ms and idle_timeout_ms must be >= 0")
        self.max_skew_ms = int(max_skew_ms)
        self.idle_timeout_ms = int(idle_timeout_ms)
        self._parts: dict[int, _Partition] = {}
        self._current: int | None = None
        self.ahead_events = 0  # events flagged ahead so far
        self.jumps = 0  # partitions that moved on after a sustained run of events ahead
        self._restored = False  # restored from a snapshot: idleness restarts at the next call

    # -- partitions ------------------------------------------------------------------------

    def expect(self, partitions, now_ms: int) -> None:
        """Declare partitions this detector reads before they deliver: each holds the
        watermark back until it delivers, or for ``idle_timeout_ms`` of wall time from now."""
        for p in partitions:
            if int(p) not in self._parts:
                self._parts[int(p)] = _Partition(last_wall_ms=int(now_ms))

    @property
    def partitions(self) -> dict[int, int | None]:
        """Each known partition's own watermark (None: nothing accepted yet)."""
        return {p: s.high for p, s in sorted(self._parts.items())}

    # -- streaming -------------------------------------------------------------------------

    def observe(self, partitions: np.ndarray, event_time_ms: np.ndarray, now_ms: int) -> np.ndarray:
        """Take one batch (in arrival order) and return a boolean mask: True for events ahead.

        Parameters
        ----------
        partitions
            The partition of each event.
        event_time_ms
            Its event time in ms.
        now_ms
            Wall time of the batch (for idleness and the wall-clock bound).
        """
        parts = np.asarray(partitions, dtype=np.int64)
        times = np.asarray(event_time_ms, dtype=np.int64)
        if parts.shape != times.shape or parts.ndim != 1:
            raise ValueError("partitions and event_time_ms must be 1-d arrays of one length")
        ahead = np.zeros(times.size, dtype=bool)
        self._wake(int(now_ms))
        if times.size == 0:
            return ahead
        now_ms = int(now_ms)
        if self._parts and all(now_ms - s.last_wall_ms >= self.idle_timeout_ms for s in self._parts.values()):
            # The whole stream paused, and now resumes: that was no partition's own silence. Every
            # partition gets a fresh idle timeout, or the first to deliver would close windows
            # that the others are about to fill.
            self._restored = True
            self._wake(now_ms)
        cap = now_ms + self.max_skew_ms
        if parts[0] == parts[-1] and not np.any(parts != parts[0]):  # one partition (e.g. one per poll)
            ahead[:] = self._observe_partition(int(parts[0]), times, now_ms, cap)
        else:  # one stable sort groups the partitions, each in arrival order
            order = np.argsort(parts, kind="stable")
            sorted_parts = parts[order]
            bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_parts)) + 1, [parts.size]])
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                idx = order[a:b]
                ahead[idx] = self._observe_partition(int(sorted_parts[a]), times[idx], now_ms, cap)
        self.ahead_events += int(ahead.sum())
        return ahead

    def _observe_partition(self, p: int, t: np.ndarray, now_ms: int, cap: int) -> np.ndarray:
        state = self._parts.get(p)
        if state is None:
            state = self._parts[p] = _Partition(last_wall_ms=now_ms)
        state.last_wall_ms = now_ms
        ref = state.high
        if ref is None:  # a partition's first events: compare with the most advanced partition
            highs = [s.high for s in self._parts.values() if s.high is not None]
            ref = max(highs) if highs else None
        # Fast path: judged against the running maximum of every event before it, nothing is ahead.
        if ref is None:
            prev = np.maximum.accumulate(np.concatenate([t[:1], t[:-1]]))
        else:
            prev = np.maximum.accumulate(np.concatenate([[ref], t[:-1]]))
        if not np.any((t > cap) | (t > prev + self.max_skew_ms)):
            top = int(t.max())
            state.high = top if state.high is None else max(state.high, top)
            state.run_events, state.run_min = 0, None
            return np.zeros(t.size, dtype=bool)
        return self._observe_slowly(state, ref, t, now_ms, cap)

    def _observe_slowly(self, state: _Partition, ref: int | None, t: np.ndarray, now_ms: int, cap: int) -> np.ndarray:
        """Event by event, for a batch of a partition where something is ahead (rare)."""
        ahead = np.zeros(t.size, dtype=bool)
        for i, ti in enumerate(t.tolist()):
            is_ahead = ti > cap or (ref is not None and ti > ref + self.max_skew_ms)
            if is_ahead and ti <= cap:
                if state.run_events == 0:
                    state.run_since_wall_ms, state.run_min = now_ms, ti
                state.run_min = min(state.run_min, ti)
                state.run_events += 1
                if state.run_events >= 2 and now_ms - state.run_since_wall_ms >= self.idle_timeout_ms:
                    # Every event of this partition has been ahead for a while: it moved on.
                    state.high = ref = min(state.run_min, cap)
                    state.run_events, state.run_min = 0, None
                    self.jumps += 1
                    is_ahead = ti > ref + self.max_skew_ms
            if is_ahead:
                ahead[i] = True
                continue
            state.run_events, state.run_min = 0, None
            state.high = ti if state.high is None else max(state.high, ti)
            ref = state.high
        return ahead

    def current(self, now_ms: int) -> int | None:
        """The watermark in force at wall time ``now_ms`` (None before any event)."""
        self._wake(now_ms)
        active = [s for s in self._parts.values() if now_ms - s.last_wall_ms < self.idle_timeout_ms]
        if active:
            if any(s.high is None for s in active):  # a live partition that has not delivered yet
                return self._current
            candidate = min(s.high for s in active)
        else:
            highs = [s.high for s in self._parts.values() if s.high is not None]
            if not highs:
                return self._current
            candidate = max(highs)
        if self._current is None or candidate > self._current:
            self._current = candidate
        return self._current

    def _wake(self, now_ms: int) -> None:
        """After a restore, every partition gets a fresh idle timeout from the first call: the
        time the detector was down is not silence of the partitions (otherwise the first
        partition to deliver after a long restart would close windows for all of them)."""
        if self._restored:
            for state in self._parts.values():
                state.last_wall_ms = max(state.last_wall_ms, now_ms)
            self._restored = False

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """JSON-able state: every partition's watermark, last wall time and run of events ahead."""
        return {"format": 1, "current": self._current, "ahead_events": self.ahead_events, "jumps": self.jumps,
                "partitions": [[p, s.high, s.last_wall_ms, s.run_events, s.run_since_wall_ms, s.run_min]
                               for p, s in sorted(self._parts.items())],
                "restored": self._restored}

    def restore(self, snapshot: dict, restart: bool = True) -> None:
        """Resume from :meth:`snapshot`: after a restart (every partition gets a fresh idle timeout
        at the next call), or, with ``restart=False``, exactly as it was (a rollback in one process)."""
        if snapshot.get("format") != 1:
            raise ValueError(f"unknown watermark snapshot format {snapshot.get('format')!r}")
        self._current = snapshot["current"]
        self.ahead_events = int(snapshot["ahead_events"])
        self.jumps = int(snapshot["jumps"])
        self._parts = {int(p): _Partition(high, wall, run, since, run_min)
                       for p, high, wall, run, since, run_min in snapshot["partitions"]}
        self._restored = True if restart else bool(snapshot.get("restored", False))
