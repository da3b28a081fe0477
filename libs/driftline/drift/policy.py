"""When drift becomes a retrain request: consecutive windows, hysteresis, re-arming after a
rejected challenger, cooldown after a promotion."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["OUTCOMES", "AlertPolicy", "RetrainDecision", "Trigger"]

#: What can become of a retrain request (the retrainer's answer, relayed by the registry's model events).
OUTCOMES = ("promoted", "rejected", "failed", "skipped")

#: Requests awaiting an outcome, and outcomes seen, remembered at most (oldest forgotten first). Requests
#: are rare (one per incident and attempt): this bounds memory when no retrainer ever answers.
REMEMBERED = 10_000

#: ``awaiting`` of an incident restored from a snapshot written before outcomes existed: its request id
#: is unknown, so no outcome can answer it and it ends by hysteresis, as it would have then.
_UNKNOWN_REQUEST = "?"


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
    """One retrain request: an incident's first, or a later attempt of a re-armed incident.

    ``window_start`` / ``window_end`` are event times (ms) of the data that showed the
    drift: from the start of the first window of the triggering streak to the end of
    the last one, or the detection's event time (both bounds) for concept drift.
    ``decided_at_ms`` is the event time at which the policy decided. ``request_id``
    is derived from the decision's content, so replaying the same input after a
    restart yields the same id (downstream can deduplicate).

    ``incident_id`` is the id of the incident's first request (this request's own id
    for a first attempt); ``attempt`` counts the incident's requests (1, 2, ...);
    ``min_rows`` is the least labelled rows to train on, 0 leaving it to the retrainer,
    which asks for ``max(its floor, min_rows) * 2 ** (attempt - 1)`` rows (capped at its
    maximum): each attempt of an incident trains on more data than the one rejected.
    """

    request_id: str
    model: str
    model_version: Any
    reason: str
    signals: tuple[Trigger, ...]
    window_start: int
    window_end: int
    decided_at_ms: int
    incident_id: str = ""
    attempt: int = 1
    min_rows: int = 0

    def __post_init__(self):
        if not self.incident_id:  # a first attempt opens its own incident
            object.__setattr__(self, "incident_id", self.request_id)

    def to_dict(self) -> dict:
        """Fields of the ``RetrainRequest`` record; ``requested_at`` is ``decided_at_ms``."""
        return {
            "request_id": self.request_id, "model": self.model, "model_version": self.model_version,
            "reason": self.reason, "signals": [asdict(s) for s in self.signals],
            "window_start": self.window_start, "window_end": self.window_end, "requested_at": self.decided_at_ms,
            "incident_id": self.incident_id, "attempt": self.attempt, "min_rows": self.min_rows,
        }


@dataclass
class _State:
    """One (model, version)'s incident."""

    in_incident: bool = False
    # No decision before this event time: ``cooldown_ms`` after a decision while its outcome is
    # unknown, or the back-off after an attempt that was not promoted.
    cooldown_until: int | None = None
    last_end: int | None = None
    suppressed: int = 0
    # feature -> the current run of windows at or above the threshold: [psi, start, end, t0, t1]
    streaks: dict[str, list[list]] = field(default_factory=dict)
    incident_id: str | None = None  # the open incident's first request id
    attempt: int = 0  # requests made in the open incident
    awaiting: str | None = None  # the latest request without an outcome


@dataclass(frozen=True)
class _Request:
    """A request awaiting its outcome."""

    model: str
    version: Any
    incident_id: str
    attempt: int


class AlertPolicy:
    """Turns window statistics, concept detections and retrain outcomes into retrain decisions.

    Per (model, version), in event time:

    1. **Data drift** fires when one feature (the score, ``__score__``, included) has
       PSI ``>= psi_threshold`` in ``consecutive_windows`` consecutive windows. The
       decision names every feature whose run reached that length, with each window's
       PSI and bounds.
    2. **Concept drift** fires on a detection from a concept detector, if
       ``on_concept_drift``.
    3. Firing with no incident open opens an **incident**: a request with ``attempt`` 1,
       whose id is the incident's id. While the incident's latest request awaits its
       outcome, nothing more fires for that (model, version).
    4. **Hysteresis**: an incident ends at the first window in which every feature's PSI
       is below ``reset_below``; PSI between ``reset_below`` and the threshold keeps it
       open.
    5. **Outcomes** (:meth:`observe_outcome`: the retrainer's answer to a request):

       a. *promoted*: the incident ends, and nothing fires for that **model** (any
          version: the promoted one starts fresh) within ``cooldown_ms`` of the
          promotion. This is the only cooldown when outcomes arrive.
       b. *rejected*, *failed* or *skipped*: the (model, version) **re-arms** after a
          back-off of ``rearm_after_ms * 2 ** (attempt - 1)``, capped at
          ``cooldown_ms``. If the incident is still open, its next
          firing is its next attempt: same ``incident_id``, ``attempt + 1``, so the
          retrainer trains on more data. If hysteresis ended it, the next firing opens
          a new incident.
       c. Each outcome applies once: one for a request already answered is ignored
          (a replayed topic re-arms nothing twice); one for a request this policy does
          not know changes nothing, but is remembered, so the same request decided
          again (a restart from an older snapshot, replaying its input) takes its
          answer at once instead of waiting for one that will not come again.
       d. An outcome for an earlier request than the (model, version)'s latest only
          counts if it is a promotion.
    6. **No outcome** (no retrainer, or one that is away): nothing fires within
       ``cooldown_ms`` of a decision, even after hysteresis ended its incident, as
       before outcomes existed; so an unanswered incident is one request, not a storm.
    7. Runs keep counting while nothing may fire (awaiting an outcome, back-off,
       cooldown), so drift still there when firing is allowed again fires at once.
       A firing held back by a back-off or cooldown, and a detection held back for
       any reason, is counted in ``status()['suppressed']``.
    8. Windows with fewer than ``min_events`` events are ignored. A window whose end
       is not after the last window seen for that (model, version) is ignored too
       (replayed input).

    Windows must be observed in the order they close. Event times come from
    :attr:`driftline.drift.window_stats.WindowStats.time_ms`; an outcome happens at
    the latest event time the policy has seen for its model (:meth:`event_time`),
    unless the caller says otherwise.

    Parameters
    ----------
    psi_threshold
        PSI at or above which a window counts towards a run.
    consecutive_windows
        Run length that fires a decision.
    reset_below
        PSI below which, for every feature, an incident ends.
    cooldown_ms
        Event time after a promotion in which no request is made for the model; also
        the least event time between two decisions for a (model, version) whose
        requests get no outcome.
    rearm_after_ms
        Back-off (event time) after a rejected, failed or skipped request before its
        (model, version) may ask again; doubled with each attempt of an incident.
        The default, 5 minutes, is five default drift windows: a re-armed data-drift
        incident fires on windows that closed after the rejection (a run of up to
        five windows rebuilt from new data), and with the doubling the retrainer is
        asked at most five times in the first hour of an incident, then once per
        ``cooldown_ms``, as before.
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

    No outcome: one request per incident, and a cooldown after it (rules 3, 4, 6).

    >>> policy = AlertPolicy(consecutive_windows=2, cooldown_ms=3_600_000)
    >>> psis = [0.05, 0.30, 0.40, 0.50, 0.20, 0.05, 0.30, 0.30]
    >>> out = [policy.observe_window("fraud", 3, window(i, v)) for i, v in enumerate(psis)]
    >>> [i for i, d in enumerate(out) if d is not None]
    [2]
    >>> d = out[2]
    >>> d.reason, [(s.feature, s.value, s.window_start) for s in d.signals]
    ('data_drift', [('amount', 0.3, 60000), ('amount', 0.4, 120000)])
    >>> d.window_start, d.window_end, d.attempt, d.incident_id == d.request_id
    (60000, 180000, 1, True)
    >>> policy.status("fraud", 3)["suppressed"]   # windows 6 and 7 fell in the cooldown
    1

    The challenger is rejected while the drift goes on: the incident re-arms after the
    back-off and asks again, with more data (rule 5b); a replayed outcome changes nothing.

    >>> policy = AlertPolicy(consecutive_windows=2, cooldown_ms=3_600_000, rearm_after_ms=120_000)
    >>> first = [policy.observe_window("fraud", 3, window(i, v)) for i, v in enumerate([0.05, 0.3, 0.4, 0.5])]
    >>> d = first[2]
    >>> policy.observe_outcome("fraud", d.request_id, "rejected", at_ms=240_000)
    True
    >>> policy.observe_outcome("fraud", d.request_id, "rejected", at_ms=240_000)
    False
    >>> later = [policy.observe_window("fraud", 3, window(i, 0.5)) for i in (4, 5, 6)]
    >>> [d2 is not None for d2 in later]   # re-armed at 240,000 + 120,000 ms: window 5 ends there
    [False, True, False]
    >>> d2 = later[1]
    >>> d2.incident_id == d.request_id, d2.attempt
    (True, 2)

    The second challenger is promoted: no request for the model within ``cooldown_ms``
    (rule 5a), whichever version.

    >>> policy.observe_outcome("fraud", d2.request_id, "promoted", at_ms=400_000)
    True
    >>> policy.status("fraud", 4)["cooldown_until_ms"]
    4000000

    """

    def __init__(
        self,
        psi_threshold: float = 0.25,
        consecutive_windows: int = 3,
        reset_below: float = 0.10,
        cooldown_ms: int = 3_600_000,
        on_concept_drift: bool = True,
        min_events: int = 0,
        rearm_after_ms: int = 300_000,
    ):
        if consecutive_windows < 1:
            raise ValueError("consecutive_windows must be >= 1")
        if reset_below > psi_threshold:
            raise ValueError("reset_below must not exceed psi_threshold")
        if cooldown_ms < 0:
            raise ValueError("cooldown_ms must be >= 0")
        if rearm_after_ms < 0:
            raise ValueError("rearm_after_ms must be >= 0")
        self.psi_threshold = psi_threshold
        self.consecutive_windows = consecutive_windows
        self.reset_below = reset_below
        self.cooldown_ms = cooldown_ms
        self.on_concept_drift = on_concept_drift
        self.min_events = min_events
        self.rearm_after_ms = rearm_after_ms
        self._states: dict[tuple[str, Any], _State] = {}
        self._requests: OrderedDict[str, _Request] = OrderedDict()  # request id -> awaiting its outcome
        self._answered: OrderedDict[str, str] = OrderedDict()  # request id -> outcome, every outcome seen
        self._promoted_until: dict[str, int] = {}  # model -> end of the cooldown after its last promotion
        self._clock: dict[str, int] = {}  # model -> latest event time seen

    def _state(self, model: str, version: Any) -> _State:
        return self._states.setdefault((model, version), _State())

    def status(self, model: str, version: Any) -> dict:
        """Incident, back-off and cooldown state of one (model, version)."""
        st = self._states.get((model, version), _State())
        holds = [t for t in (st.cooldown_until, self._promoted_until.get(model)) if t is not None]
        return {"in_incident": st.in_incident, "incident_id": st.incident_id, "attempt": st.attempt,
                "awaiting": st.awaiting, "cooldown_until_ms": max(holds) if holds else None,
                "suppressed": st.suppressed, "runs": {f: len(r) for f, r in st.streaks.items() if r}}

    def event_time(self, model: str) -> int | None:
        """The latest event time (ms) seen for ``model`` (any version), or None."""
        return self._clock.get(model)

    def _tick(self, model: str, now: int) -> None:
        self._clock[model] = max(self._clock.get(model, now), now)

    def _held(self, st: _State, model: str, now: int) -> bool:
        """In a back-off or cooldown (rules 5 and 6)."""
        return any(t is not None and now < t for t in (st.cooldown_until, self._promoted_until.get(model)))

    @staticmethod
    def _awaiting(st: _State) -> bool:
        """The open incident's latest request has no outcome yet (rule 3)."""
        return st.in_incident and st.awaiting is not None

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
        self._tick(model, now)
        feats = ws.features
        if st.in_incident:
            if all(s.psi < (s.reset_below if s.threshold_mode == "calibrated" else self.reset_below)
                   for s in feats.values()):
                self._end_incident(st)
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
        if not firing or self._awaiting(st):
            return None
        if self._held(st, model, now):
            st.suppressed += 1
            return None
        signals = tuple(
            Trigger("data", f, "psi", v, start, end)
            for f, run in sorted(firing.items()) for v, start, end, _, _ in run
        )
        w0 = min(r[3] for run in firing.values() for r in run)
        w1 = max(r[4] for run in firing.values() for r in run)
        return self._fire(st, model, version, "data_drift", signals, w0, w1, now)

    def observe_concept(
        self, model: str, version: Any, detector_name: str, index: int, event_time_ms: int
    ) -> RetrainDecision | None:
        """Feed one concept-drift detection (global index in the error stream, event
        time of that error); return the decision it triggers, if any."""
        if not self.on_concept_drift:
            return None
        st = self._state(model, version)
        self._tick(model, event_time_ms)
        if self._awaiting(st) or self._held(st, model, event_time_ms):
            st.suppressed += 1
            return None
        trig = (Trigger("concept", "__error__", detector_name, float(index), int(index), int(index)),)
        return self._fire(st, model, version, "concept_drift", trig, event_time_ms, event_time_ms, event_time_ms)

    def observe_outcome(self, model: str, request_id: str, outcome: str, at_ms: int | None = None) -> bool:
        """Feed a retrain request's outcome (one of :data:`OUTCOMES`) at event time ``at_ms``
        (default: :meth:`event_time` of ``model``); True if it changed anything (rule 5)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown retrain outcome {outcome!r}; expected one of {OUTCOMES}")
        request = self._requests.get(request_id)
        if request_id in self._answered or (request is not None and request.model != model):
            return False
        _remember(self._answered, request_id, outcome)
        if request is None:
            return False
        del self._requests[request_id]
        at = at_ms if at_ms is not None else self._clock.get(model, 0)
        return self._apply(request_id, request, outcome, at)

    def _apply(self, request_id: str, request: _Request, outcome: str, at: int) -> bool:
        st = self._states.get((request.model, request.version))
        if outcome == "promoted":
            until = at + self.cooldown_ms
            self._promoted_until[request.model] = max(self._promoted_until.get(request.model, until), until)
            if st is not None:
                self._end_incident(st)
                st.awaiting, st.cooldown_until = None, None
            return True
        if st is None or st.awaiting != request_id:  # retired, or answered after a later request (rule 5d)
            return False
        st.awaiting = None
        st.cooldown_until = at + self._backoff(request.attempt)
        return True

    def _backoff(self, attempt: int) -> int:
        """Rule 5b's back-off after ``attempt`` of an incident was not promoted."""
        # Never longer than the cooldown: a rejected attempt does not wait longer than a promoted one.
        return min(self.rearm_after_ms * 2 ** min(attempt - 1, 40), self.cooldown_ms)

    @staticmethod
    def _end_incident(st: _State) -> None:
        st.in_incident = False
        st.incident_id = None
        st.attempt = 0
        st.streaks.clear()

    def _fire(self, st: _State, model: str, version: Any, reason: str, signals: tuple[Trigger, ...],
              w0: int, w1: int, now: int) -> RetrainDecision:
        """Decide: the next attempt of the open (re-armed) incident, or a new incident's first."""
        if st.in_incident:
            decision = _decision(model, version, reason, signals, w0, w1, now, st.incident_id, st.attempt + 1)
        else:
            decision = _decision(model, version, reason, signals, w0, w1, now)
        st.in_incident = True
        st.incident_id, st.attempt, st.awaiting = decision.incident_id, decision.attempt, decision.request_id
        st.cooldown_until = now + self.cooldown_ms
        st.streaks.clear()
        request = _Request(model, version, decision.incident_id, decision.attempt)
        answer = self._answered.get(decision.request_id)
        if answer is not None:  # decided before, and answered, before a restart from an older snapshot (rule 5c)
            self._apply(decision.request_id, request, answer, now)
        else:
            _remember(self._requests, decision.request_id, request)
        return decision

    def forget(self, model: str, version: Any) -> None:
        """Drop a retired version's incident state (it will see no more windows). Its
        requests still awaiting an outcome are kept: a promotion still starts the model's
        cooldown."""
        self._states.pop((model, version), None)

    def snapshot(self) -> dict:
        """JSON-able state of every (model, version), the requests awaiting an outcome,
        the outcomes seen and the cooldowns after promotions."""
        return {
            "format": 2,
            "states": [
                {"model": m, "version": v, "in_incident": s.in_incident, "cooldown_until": s.cooldown_until,
                 "last_end": s.last_end, "suppressed": s.suppressed, "streaks": s.streaks,
                 "incident_id": s.incident_id, "attempt": s.attempt, "awaiting": s.awaiting}
                for (m, v), s in self._states.items()
            ],
            "requests": [[rid, r.model, r.version, r.incident_id, r.attempt] for rid, r in self._requests.items()],
            "answered": [[rid, outcome] for rid, outcome in self._answered.items()],
            "promoted_until": [[m, t] for m, t in self._promoted_until.items()],
            "clock": [[m, t] for m, t in self._clock.items()],
        }

    def restore(self, snapshot: dict) -> None:
        """Resume from :meth:`snapshot` (the policy's parameters may differ). A snapshot of
        format 1 (before outcomes existed) restores too: its open incidents await a request
        no outcome can name, so they end by hysteresis, as they would have then."""
        fmt = snapshot.get("format")
        if fmt not in (1, 2):
            raise ValueError("unknown policy snapshot format")
        self._states = {}
        for d in snapshot["states"]:
            st = _State(d["in_incident"], d["cooldown_until"], d["last_end"], d["suppressed"],
                        {f: [list(r) for r in run] for f, run in d["streaks"].items()})
            if fmt == 2:
                st.incident_id, st.attempt, st.awaiting = d["incident_id"], d["attempt"], d["awaiting"]
            elif st.in_incident:
                st.attempt, st.awaiting = 1, _UNKNOWN_REQUEST
            self._states[(d["model"], d["version"])] = st
        self._requests = OrderedDict((rid, _Request(m, v, i, a)) for rid, m, v, i, a in snapshot.get("requests", []))
        self._answered = OrderedDict((rid, o) for rid, o in snapshot.get("answered", []))
        self._promoted_until = {m: t for m, t in snapshot.get("promoted_until", [])}
        self._clock = {m: t for m, t in snapshot.get("clock", [])}


def _remember(memory: OrderedDict, key: str, value: Any) -> None:
    memory[key] = value
    while len(memory) > REMEMBERED:
        memory.popitem(last=False)


def _decision(model, version, reason, signals, w0, w1, now, incident_id: str = "", attempt: int = 1) -> RetrainDecision:
    key = f"{model}|{version}|{reason}|{w0}|{w1}|{now}|" + ";".join(
        f"{s.feature}:{s.statistic}:{s.window_start}" for s in signals)
    if attempt > 1:
        key += f"|{incident_id}|{attempt}"
    rid = hashlib.sha256(key.encode()).hexdigest()[:32]
    return RetrainDecision(rid, model, version, reason, signals, int(w0), int(w1), int(now), incident_id, attempt)
