"""The retrainer's rows of the ``retrain_requests`` table: a request's status as it moves.

The drift-detector writes a request's ``requested`` row (status_rank 0); the
retrainer writes ``training`` (rank 1) when a challenger's training starts, and
the outcome (rank 2): ``promoted``, ``rejected``, ``failed`` or ``skipped``.
The table is a ReplacingMergeTree on ``status_rank``, so ``FINAL`` shows a
request's furthest status whatever order the rows arrived in. Every row has
every column (``Store.insert`` takes the columns of a batch's first row).
"""

from __future__ import annotations

import json
from typing import Any

TABLE = "retrain_requests"

#: status -> status_rank
STATUS_RANK = {"requested": 0, "training": 1, "promoted": 2, "rejected": 2, "failed": 2, "skipped": 2}


def request_row(request: dict[str, Any], status: str, now_ms: int, *, decision: str = "",
                challenger_version: int | None = None, rows_used: int | None = None) -> dict[str, Any]:
    """A ``retrain_requests`` row for ``request`` (a RetrainRequest, times in ms) at ``status``.

    Examples
    --------
    >>> row = request_row({"request_id": "r1", "model": "pump", "model_version": 1, "reason": "psi",
    ...                    "signals": [], "window_start": 0, "window_end": 10, "requested_at": 10}, "training", 20,
    ...                   rows_used=4000)
    >>> row["status_rank"], row["incident_id"], row["attempt"], row["rows_used"], row["challenger_version"]
    (1, 'r1', 1, 4000, None)
    """
    if status not in STATUS_RANK:
        raise ValueError(f"unknown retrain request status {status!r}; one of {sorted(STATUS_RANK)}")
    return {
        "request_id": request["request_id"],
        # a request from before issue 11 has no incident: it is its own
        "incident_id": request.get("incident_id") or request["request_id"],
        "attempt": int(request.get("attempt") or 1),
        "model": request["model"],
        "model_version": int(request["model_version"]),
        "reason": request["reason"],
        "signals": json.dumps(request.get("signals") or [], default=str),
        "window_start": int(request["window_start"]),
        "window_end": int(request["window_end"]),
        "requested_at": int(request["requested_at"]),
        "min_rows": int(request.get("min_rows") or 0),
        "status": status,
        "status_rank": STATUS_RANK[status],
        "decision": decision,
        "challenger_version": None if challenger_version is None else int(challenger_version),
        "rows_used": None if rows_used is None else int(rows_used),
        "updated_at": int(now_ms),
    }
