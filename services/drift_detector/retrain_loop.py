"""The retrain loop as data, on the drift-detector's side.

The registry's audit log leaves through its outbox as ModelEvent records on the
``models`` topic. The drift-detector reads them for two things:

- **Outcomes.** A model event that answers a retrain request carries its
  ``request_id`` (the retrainer's audit rows): ``alias_moved`` to ``champion`` is
  *promoted*, ``rejected`` is *rejected*, ``retrain_failed`` *failed* and
  ``retrain_skipped`` *skipped*. The alert policy re-arms or cools down on them
  (:meth:`driftline.drift.AlertPolicy.observe_outcome`).
- **The** ``audit`` **table.** Every model event is mirrored as a row, so one SQL
  query follows an incident from its first drifted window (``drift_metrics``)
  through its requests (``retrain_requests``) to the promotion (``audit``).

The drift-detector also writes each request's first row in ``retrain_requests``:
status ``requested`` (rank 0); the retrainer writes the later statuses, which
outrank it, so a replayed ``requested`` row never hides an outcome.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from driftline.drift import RetrainDecision
from driftline.timeutil import to_datetime, to_ms

#: (action, alias) of a model event -> the outcome of the request it names; alias None matches any.
OUTCOME_OF: dict[tuple[str, str | None], str] = {
    ("alias_moved", "champion"): "promoted",
    ("rejected", None): "rejected",
    ("retrain_failed", None): "failed",
    ("retrain_skipped", None): "skipped",
}

#: The ``status_rank`` of a ``requested`` row: the lowest, any later status replaces it.
REQUESTED_RANK = 0


@dataclass(frozen=True)
class OutcomeSeen:
    """A model event that answered a retrain request, and whether the policy acted on it
    (False: a replay, or a request this detector does not know)."""

    model: str
    request_id: str
    outcome: str
    applied: bool


def outcome_of(event: dict[str, Any]) -> str | None:
    """The outcome a ModelEvent reports for its ``request_id``, or None if it reports none."""
    if not event.get("request_id"):
        return None
    action = event["action"]
    return OUTCOME_OF.get((action, event.get("alias")), OUTCOME_OF.get((action, None)))


#: Versions are UInt32 in the store; a model event outside that range was not written by a registry.
MAX_VERSION = 2**32 - 1


def audit_row(event: dict[str, Any]) -> dict[str, Any]:
    """An ``audit`` row (every column) mirroring a ModelEvent; '' for no alias or no request.

    Raises ValueError for a version the ``audit`` table cannot hold (the runner dead-letters
    the event alone, instead of failing the batch's insert)."""
    for field in ("version", "previous_version"):
        value = event.get(field)
        if value is not None and not 0 <= value <= MAX_VERSION:
            raise ValueError(f"model event with {field} {value}: a version is between 0 and {MAX_VERSION}")
    return {
        "model": event["model"], "version": int(event["version"]), "action": event["action"],
        "alias": event.get("alias") or "", "previous_version": event.get("previous_version"),
        "actor": event["actor"], "reason": event["reason"], "request_id": event.get("request_id") or "",
        "sha256": event["sha256"], "occurred_at": to_datetime(to_ms(event["occurred_at"])),
    }


def requested_row(decision: RetrainDecision, now_ms: int) -> dict[str, Any]:
    """The ``retrain_requests`` row of a request as the drift-detector makes it (every column)."""
    return {
        "request_id": decision.request_id, "incident_id": decision.incident_id, "attempt": decision.attempt,
        "model": decision.model, "model_version": int(decision.model_version), "reason": decision.reason,
        "signals": json.dumps([asdict(s) for s in decision.signals]),
        "window_start": to_datetime(decision.window_start), "window_end": to_datetime(decision.window_end),
        "requested_at": to_datetime(decision.decided_at_ms), "min_rows": decision.min_rows,
        "status": "requested", "status_rank": REQUESTED_RANK, "decision": "", "challenger_version": None,
        "rows_used": None, "updated_at": to_datetime(now_ms),
    }
