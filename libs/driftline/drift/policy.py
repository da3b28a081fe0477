"""When drift becomes a retrain request: consecutive windows, hysteresis, cooldown."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AlertPolicy", "RetrainDecision", "Trigger"]


@dataclass(frozen=True)
class Trigger:
    """One signal behind a decision (the ``Trigger`` record of ``RetrainRequest``).

    For data drift: ``feature``, ``statistic="psi"``, its ``value`` and the window's
    ``window_start`` / ``window_end`` (event time in ms, or event index for count
    windows). For concept drift: ``feature="__error__"``, the detector's name, and the
    detection's global index in the error stream as value and bounds.
    """

    kind: str
    feature: str
    statistic: str
    value: float
    window_start: int
    window_end: int


@dataclass(frozen=True)
class RetrainDecision:
    """One incident's single retrain request.

    ``window_start`` / ``window_end`` are event times (ms) of the data that showed the
    drift: from the start of the first window of the triggering streak to the end of
    the last one, or the detection's event time (both bounds) for concept drift.
    ``decided_at_ms`` is the event time at which the policy decided. ``request_id``
    is derived from the decision's content, so replaying the same input after a
    restart yields the same id (downstream can deduplicate).
    """

    request_id: str
    model: str
    model_version: Any
    reason: str
    signals: tuple[Trigger, ...]
    window_start: int
    window_end: int
    decided_at_ms: int

    def to_dict(self) -> dict:
        """Fields of the ``RetrainRequest`` record; ``requested_at`` is ``decided_at_ms``."""
        return {
            "request_id": self.request_id, "model": self.model, "model_version": self.model_version,
            "reason": self.reason, "signals": [asdict(s) for s in self.signals],
            "window_start": self.window_start, "window_end": self.window_end, "requested_at": self.decided_at_ms,
        }


@dataclass
class _State:
    in_incident: bool = False
    cooldown_until: int | None = None
    last_end: int | None = None
    suppressed: int = 0
    # feature -> the current run of windows at or above the threshold: [psi, start, end, t0, t1]
    streaks: dict[str, list[list]] = field(default_factory=dict)


class AlertPolicy:
    """Turns window statistics and concept detections into retrain decisions.

    Per (model, version):

    * **Data drift** fires when one feature (the score, ``__score__``, included) has
      PSI ``>= psi_threshold`` in ``consecutive_windows`` consecutive windows. The
      decision names every feature whose run reached that length, with each window's
      PSI and bounds.
    * **Concept drift** fires on a detection from a concept detector, if
      ``on_concept_drift``.
    * A decision opens an **incident**: no further decision until it ends.
      **Hysteresis**: it ends at the first window in which every feature's PSI is
      below ``reset_below``; PSI between ``reset_below`` and the threshold keeps it
      open.
    * **Cooldown**: no decision within ``cooldown_ms`` (event time) of the previous
      one, even after its incident ended. Runs keep counting during a cooldown, so
      drift that is still there when the cooldown ends fires at once.
    * Windows with fewer than ``min_events`` events are ignored. A window whose end is
      not after the last window seen for that (model, version) is ignored too
      (replayed input).

    Windows must be observed in the order they close. Event times come from
    :attr:`driftline.drift.window_stats.WindowStats.time_ms`.

    Parameters
    ----------
    psi_threshold
        PSI at or above which a window counts towards a run.
    consecutive_windows
        Run length that fires a decision.
    reset_below
        PSI below which, for every feature, an incident ends.
    cooldown_ms
        Minimum event time between two decisions for the same (model, version).
    on_concept_drift
        Whether concept detections fire decisions.
    min_events
        Windows with fewer events are ignored.

    Examples
    --------
    >>> from driftline.drift.policy import AlertPolicy
    >>> from driftline.drift.psi import FeatureStats, psi_band
    >>> from driftline.drift.window_stats import WindowStats

    >>> def window(i, value):
    ...     fs = FeatureStats("amount", "numeric", 1000, value, psi_band(value), 0.0)
    ...     return WindowStats("fraud", 3, "time", i * 60_000, (i + 1) * 60_000, 1000, None, None, {"amount": fs})

    >>> policy = AlertPolicy(consecutive_windows=2, cooldown_ms=3_600_000)
    >>> psis = [0.05, 0.30, 0.40, 0.50, 0.20, 0.05, 0.30, 0.30]
    >>> out = [policy.observe_window("fraud", 3, window(i, v)) for i, v in enumerate(psis)]
    >>> [i for i, d in enumerate(out) if d is not None]
    [2]
    >>> d = out[2]
    >>> d.reason, [(s.feature, s.value, s.window_start) for s in d.signals]
    ('data_drift', [('amount', 0.3, 60000), ('amount', 0.4, 120000)])
    >>> d.window_start, d.window_end
    (60000, 180000)
    >>> policy.status("fraud", 3)["suppressed"]   # windows 6 and 7 fell in the cooldown
    1

    """

    def __init__(
        self,
        psi_threshold: float = 0.25,
        consecutive_windows: int = 3,
        reset_below: float = 0.10,
        cooldown_ms: int = 3_600_000,
        on_concept_drift: bool = True,
        min_events: int = 0,
    ):
        if consecutive_windows < 1:
            raise ValueError("consecutive_windows must be >= 1")
        if reset_below > psi_threshold:
            raise ValueError("reset_below must not exceed psi_threshold")
        if cooldown_ms < 0:
            raise ValueError("cooldown_ms must be >= 0")
        self.psi_threshold = psi_threshold
        self.consecutive_windows = consecutive_windows
        self.reset_below = reset_below
        self.cooldown_ms = cooldown_ms
        self.on_concept_drift = on_concept_drift
        self.min_events = min_events
        self._states: dict[tuple[str, Any], _State] = {}

    def _state(self, model: str, version: Any) -> _State:
        return self._states.setdefault((model, version), _State())

    def status(self, model: str, version: Any) -> dict:
        """Incident and cooldown state of one (model, version)."""
        st = self._states.get((model, version), _State())
        return {"in_incident": st.in_incident, "cooldown_until_ms": st.cooldown_until, "suppressed": st.suppressed,
                "runs": {f: len(r) for f, r in st.streaks.items() if r}}

    def _cooling(self, st: _State, now: int) -> bool:
        return st.cooldown_until is not None and now < st.cooldown_until

    def _open(self, st: _State, now: int) -> None:
        st.in_incident = True
        st.cooldown_until = now + self.cooldown_ms
        st.streaks.clear()

    def observe_window(self, model: str, version: Any, window_stats) -> RetrainDecision | None:
        """Feed one closed window's statistics (a ``WindowStats``); return the decision
        it triggers, if any."""
        ws = window_stats
        st = self._state(model, version)
        if st.last_end is not None and ws.end <= st.last_end:
            return None
        st.last_end = ws.end
        if ws.n < self.min_events:
            return None
        now = ws.time_ms
        if now is None:
            raise ValueError("the window has no event time (give the counter event_time_ms)")
        feats = ws.features
        if st.in_incident:
            if all(s.psi < (s.reset_below if s.threshold_mode == "calibrated" else self.reset_below)
                   for s in feats.values()):
                st.in_incident = False
                st.streaks.clear()
            return None
        t0 = ws.start if ws.by == "time" else ws.min_event_time_ms
        t1 = ws.end if ws.by == "time" else ws.max_event_time_ms
        k = self.consecutive_windows
        for f, s in feats.items():
            if s.psi >= (s.threshold if s.threshold_mode == "calibrated" else self.psi_threshold):
                run = st.streaks.setdefault(f, [])
                run.append([float(s.psi), ws.start, ws.end, t0, t1])
                del run[:-k]
            else:
                st.streaks.pop(f, None)
        firing = {f: run for f, run in st.streaks.items() if len(run) >= k}
        if not firing:
            return None
        if self._cooling(st, now):
            st.suppressed += 1
            return None
        signals = tuple(
            Trigger("data", f, "psi", v, start, end)
            for f, run in sorted(firing.items()) for v, start, end, _, _ in run
        )
        w0 = min(r[3] for run in firing.values() for r in run)
        w1 = max(r[4] for run in firing.values() for r in run)
        self._open(st, now)
        return _decision(model, version, "data_drift", signals, w0, w1, now)

    def observe_concept(
        self, model: str, version: Any, detector_name: str, index: int, event_time_ms: int
    ) -> RetrainDecision | None:
        """Feed one concept-drift detection (global index in the error stream, event
        time of that error); return the decision it triggers, if any."""
        if not self.on_concept_drift:
            return None
        st = self._state(model, version)
        if st.in_incident or self._cooling(st, event_time_ms):
            st.suppressed += 1
            return None
        self._open(st, event_time_ms)
        trig = (Trigger("concept", "__error__", detector_name, float(index), int(index), int(index)),)
        return _decision(model, version, "concept_drift", trig, event_time_ms, event_time_ms, event_time_ms)

    def forget(self, model: str, version: Any) -> None:
        """Drop a retired version's incident state (it will see no more windows)."""
        self._states.pop((model, version), None)

    def snapshot(self) -> dict:
        """JSON-able state of every (model, version)."""
        return {"format": 1, "states": [
            {"model": m, "version": v, "in_incident": s.in_incident, "cooldown_until": s.cooldown_until,
             "last_end": s.last_end, "suppressed": s.suppressed, "streaks": s.streaks}
            for (m, v), s in self._states.items()
        ]}

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot` (the policy's parameters may differ)."""
        if snapshot.get("format") != 1:
            raise ValueError("unknown policy snapshot format")
        self._states = {
            (d["model"], d["version"]): _State(d["in_incident"], d["cooldown_until"], d["last_end"], d["suppressed"],
                                               {f: [list(r) for r in run] for f, run in d["streaks"].items()})
            for d in snapshot["states"]
        }


def _decision(model, version, reason, signals, w0, w1, now) -> RetrainDecision:
    key = f"{model}|{version}|{reason}|{w0}|{w1}|{now}|" + ";".join(
        f"{s.feature}:{s.statistic}:{s.window_start}" for s in signals)
    rid = hashlib.sha256(key.encode()).hexdigest()[:32]
    return RetrainDecision(rid, model, version, reason, signals, int(w0), int(w1), int(now))
