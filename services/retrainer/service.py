"""The retrainer as a runnable service: retrain requests in; challengers registered, promoted or rejected.

A request waits (in checkpointed state) until the store holds enough labelled
rows from its data window, because labels arrive long after the drift that
triggered it; after ``wait_ms`` without enough rows it is given up, with an
audit row saying why.

Training labels follow the champion's task: the true class for classification,
the true value (``labels.value``) for regression. A request that cannot be
served (say a gate metric the task does not have) is recorded as failed with
its reason instead of stopping the service.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

import driftline
from driftline.models import refits_by_clone, to_frame
from driftline.runner import Incoming, Output
from driftline.store import Store
from driftline.timeutil import to_datetime, to_ms
from driftline.topics import RETRAIN
from driftline.services.retrainer.logic import LabelledData, Retrainer

log = logging.getLogger(__name__)

COUNT_SQL = """
SELECT count() FROM labels FINAL
WHERE model = {model:String} AND status = 'joined' AND event_time >= {start:DateTime64(3)}
"""

TRAINING_SQL = """
SELECT p.numeric_features, p.categorical_features, l.label, toUnixTimestamp64Milli(p.event_time) AS event_ms, l.value
FROM labels AS l FINAL
INNER JOIN (
    SELECT event_id, numeric_features, categorical_features, event_time FROM predictions FINAL
    WHERE model = {model:String} AND role = 'champion' AND event_time >= {start:DateTime64(3)}
) AS p ON p.event_id = l.event_id
WHERE l.model = {model:String} AND l.status = 'joined'
ORDER BY event_ms DESC
LIMIT {limit:UInt32}
"""


def _targets(task: str, rows: list[tuple]) -> np.ndarray:
    """Training targets from TRAINING_SQL rows: the class, or the numeric value for regression."""
    if task == "regression":
        # Ingest stores a regression label's value in both columns; fall back to the text for older rows.
        return np.array([r[4] if r[4] is not None else float(r[2]) for r in rows], dtype=np.float64)
    return np.array([r[2] for r in rows], dtype=object)


class RetrainerService:
    name = "retrainer"
    topics = [RETRAIN]

    def __init__(self, retrainer: Retrainer, store: Store, registry: Any, *, max_rows: int = 50_000,
                 wait_ms: int = 3_600_000):
        self.retrainer = retrainer
        self.store = store
        self.registry = registry
        self.max_rows = max_rows
        self.wait_ms = wait_ms
        self.pending: list[dict[str, Any]] = []  # requests waiting for labels, with "received_at"
        self.done: list[str] = []  # ids of requests already handled: a replayed request is ignored
        self.outcomes: list[dict[str, Any]] = []  # what happened to each request, newest last

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        for item in batch:
            request = {**item.record, "window_start": to_ms(item.record["window_start"]),
                       "window_end": to_ms(item.record["window_end"]),
                       "requested_at": to_ms(item.record["requested_at"]), "received_at": now_ms}
            if request["request_id"] not in {p["request_id"] for p in self.pending} | set(self.done):
                self.pending.append(request)
        waiting = []
        for request in self.pending:
            if self._try(request, now_ms):
                self.done = (self.done + [request["request_id"]])[-1000:]
            else:
                waiting.append(request)
        self.pending = waiting
        return Output()

    def _try(self, request: dict[str, Any], now_ms: int) -> bool:
        """Handle ``request`` if its data is there; True when it is done with."""
        model, start = request["model"], to_datetime(request["window_start"])
        rows = int(self.store.scalar(COUNT_SQL, {"model": model, "start": start}))
        if not self.retrainer.enough(rows):
            if now_ms - request["received_at"] < self.wait_ms:
                return False
            champion = self.registry.resolve(model, "champion")
            reason = (f"request {request['request_id']} given up: {rows} labelled rows since the drift, "
                      f"{self.retrainer.min_rows} needed")
            if champion is not None:
                self.registry.record(model, champion.version, "retrain_skipped", actor="retrainer", reason=reason)
            self.outcomes.append({"request_id": request["request_id"], "outcome": "skipped", "reason": reason})
            return True
        try:
            self._retrain(request)
        except ValueError as exc:  # bad recipe or gate for this model: say so, keep serving the others
            reason = f"request {request['request_id']} failed: {exc}"
            champion = self.registry.resolve(model, "champion")
            if champion is not None:
                self.registry.record(model, champion.version, "retrain_failed", actor="retrainer", reason=reason)
            self.outcomes.append({"request_id": request["request_id"], "outcome": "failed", "reason": reason})
            log.error("retrainer: %s", reason)
        return True

    def _retrain(self, request: dict[str, Any]) -> None:
        model = request["model"]
        champion = self.registry.load(model, "champion")
        parameters = {"model": model, "start": to_datetime(request["window_start"]), "limit": self.max_rows}
        _, rows = self.store.query(TRAINING_SQL, parameters)
        data = LabelledData(
            frame=to_frame(champion.meta.contract, [r[0] for r in rows], [r[1] for r in rows], champion.estimator),
            labels=_targets(champion.meta.contract.task, rows),
            event_time_ms=np.array([r[3] for r in rows], dtype=np.int64),
            sql=TRAINING_SQL.strip(),
        )
        verdict = self.retrainer.evaluate(data, champion)
        lineage = {
            "training_sql": data.sql,
            "sql_parameters": {"model": model, "window_start_ms": request["window_start"], "limit": self.max_rows},
            "rows": len(rows),
            "train_rows": verdict.train_rows,
            "holdout_rows": verdict.holdout_rows,
            "holdout_from_ms": verdict.holdout_from_ms,
            "data_sha256": verdict.challenger.data_sha256,
            "parent_version": champion.meta.version,
            "retrain_request": {k: request[k] for k in ("request_id", "reason", "signals", "window_start", "window_end")},
            "code_version": f"driftline {driftline.__version__}",
        }
        if refits_by_clone(champion.meta.recipe):
            lineage["refit"] = f"sklearn.base.clone of v{champion.meta.version}'s pipeline (registered without a recipe)"
        version = self.registry.register(
            model, verdict.challenger.estimator, champion.meta.contract, actor="retrainer",
            reason=f"retrained for request {request['request_id']} ({request['reason']})",
            recipe=champion.meta.recipe, params=champion.meta.recipe.get("params", {}), metrics=verdict.metrics,
            lineage=lineage, profile=verdict.challenger.profile,
        )
        self.registry.set_alias(model, "challenger", version.version, actor="retrainer", reason=verdict.reason)
        if verdict.promote:
            self.registry.set_alias(model, "champion", version.version, actor="retrainer", reason=verdict.reason)
        else:
            self.registry.record(model, version.version, "rejected", actor="retrainer", reason=verdict.reason)
        outcome = {"request_id": request["request_id"], "outcome": "promoted" if verdict.promote else "rejected",
                   "version": version.version, "reason": verdict.reason, "metrics": verdict.metrics}
        self.outcomes.append(outcome)
        log.warning("retrainer: %s v%d %s: %s", model, version.version, outcome["outcome"], verdict.reason)

    def snapshot(self) -> bytes:
        return json.dumps({"pending": self.pending, "done": self.done}).encode()

    def restore(self, snapshot: bytes) -> None:
        state = json.loads(snapshot)
        self.pending, self.done = state["pending"], state["done"]
