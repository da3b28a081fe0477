"""The retrainer as a runnable service: retrain requests in; challengers registered, promoted or rejected.

A request waits (in checkpointed state) until the store holds enough labelled
rows from its data window, because labels arrive long after the drift that
triggered it; after ``wait_ms`` without enough rows it is given up, with an
audit row saying why. How many is enough is the request's
:class:`~driftline.services.retrainer.floor.RowNeed`: as many as give the
challenger the champion's training size, more for a later attempt of an
incident, capped at ``max_rows`` (see :mod:`driftline.services.retrainer.floor`).

What happened to a request is told three ways, all naming its request id: the
registry's audit rows and ModelEvents (``registered``, ``alias_moved``,
``rejected``, ``retrain_failed``, ``retrain_skipped``; the drift-detector
re-arms an incident from them), the ``retrain_requests`` table (a ``training``
row, then the outcome with the decision, the challenger and the rows used), and
:attr:`RetrainerService.outcomes`.

Training labels follow the champion's task: the true class for classification,
the true value (``labels.value``) for regression.

Failure is a designed path:

- **Outside the poll loop.** :meth:`RetrainerService.handle` fetches the data
  and the champion, starts the training in a worker thread
  (:class:`~driftline.services.retrainer.worker.TrainingJob`) and returns; a
  later ``handle()`` picks the result up and registers it. One training runs
  at a time; a request in training is still ``pending`` in the snapshot, so a
  restart retries it.
- **Bounded.** A training that raises (one class, too few rows, a fit error, a
  gate metric the task lacks) or outlives ``timeout_s`` is the request's
  outcome ``failed``, with its reason in a ``retrain_failed`` audit row on the
  champion; the next request is served.
- **Idempotent on the request id.** A version whose lineage names the request
  (``retrain_request.request_id``) is the request's challenger: a replayed
  request (a crash after registering, before the commit) completes that
  version's decision, recorded in its lineage, and never trains or registers
  again; alias moves and the rejection row are skipped when the audit log
  already holds them (found by the request id on the audit row; by the reason
  text for rows written before audit rows had one).
- **Transient is not failed.** The store or the registry unreachable
  (:func:`driftline.failure.is_transient`) propagates to the runner, which
  retries with backoff; the request stays pending.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

import driftline
from driftline.failure import is_transient
from driftline.models import refits_by_clone, to_frame
from driftline.registry import LoadedModel
from driftline.runner import Incoming, Output
from driftline.store import Store
from driftline.timeutil import to_datetime, to_ms
from driftline.topics import RETRAIN
from driftline.services.retrainer.floor import RowFloor
from driftline.services.retrainer.logic import LabelledData, Retrainer, Verdict
from driftline.services.retrainer.request_rows import TABLE as REQUESTS_TABLE
from driftline.services.retrainer.request_rows import request_row
from driftline.services.retrainer.worker import TrainingJob

log = logging.getLogger(__name__)

#: Ids of handled requests remembered (a replay older than these is caught by the registry lookup instead).
DONE_KEPT = 1000
#: Outcomes kept in memory for inspection, newest last.
OUTCOMES_KEPT = 1000

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


@dataclass(frozen=True)
class Prepared:
    """What a training needs, fetched in the poll loop (store and registry are not touched by the worker)."""

    request: dict[str, Any]
    champion: LoadedModel
    data: LabelledData


class RetrainerService:
    name = "retrainer"
    topics = [RETRAIN]

    def __init__(self, retrainer: Retrainer, store: Store, registry: Any, *, max_rows: int = 50_000,
                 wait_ms: int = 3_600_000, timeout_s: float = 600.0, floor: RowFloor | None = None):
        self.retrainer = retrainer
        self.store = store
        self.registry = registry
        self.max_rows = max_rows
        # the labelled rows a request needs; by default the champion's training size, bounded by the settings
        self.floor = floor or RowFloor(min_rows=retrainer.min_rows, max_rows=max_rows,
                                       holdout_fraction=retrainer.holdout_fraction)
        self.wait_ms = wait_ms
        self.timeout_s = timeout_s
        self.pending: list[dict[str, Any]] = []  # requests not yet done with (incl. the one in training)
        self.done: list[str] = []  # ids of requests already handled: a replayed request is ignored
        self.outcomes: list[dict[str, Any]] = []  # what happened to each request, newest last
        self.job: TrainingJob | None = None  # the training under way, or finished and not yet registered
        self._job_input: Prepared | None = None
        # retrain_requests rows not yet handed to the runner: kept across a handle() that raises
        self._rows: list[dict[str, Any]] = []
        self._now_ms = 0

    # -- the poll loop ---------------------------------------------------------------------

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        self._now_ms = now_ms
        for item in batch:
            request = {**item.record, "window_start": to_ms(item.record["window_start"]),
                       "window_end": to_ms(item.record["window_end"]),
                       "requested_at": to_ms(item.record["requested_at"]), "received_at": now_ms}
            # a request from before issue 11 (or a test's dict) lacks these: the schema's defaults
            request["incident_id"] = request.get("incident_id") or request["request_id"]
            request["attempt"] = int(request.get("attempt") or 1)
            request["min_rows"] = int(request.get("min_rows") or 0)
            if request["request_id"] not in {p["request_id"] for p in self.pending} | set(self.done):
                self.pending.append(request)
        if self.job is not None:
            self._collect()
        for request in list(self.pending):
            if self.job is not None and self.job.request_id == request["request_id"]:
                continue
            try:
                self._try(request, now_ms)
            except Exception as exc:  # noqa: BLE001 - a dependency away propagates; anything else fails the request
                if is_transient(exc):
                    raise
                self._fail(request, _describe(exc))
        out = Output()
        out.add_rows(REQUESTS_TABLE, self._rows)
        self._rows = []
        return out

    @property
    def busy(self) -> bool:
        """True while a training runs or waits to be registered."""
        return self.job is not None

    def wait_for_training(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for the training under way; True when there is a result to collect.

        For callers that drive the loop themselves and want a deterministic run
        (embedded mode's ``pump``, tests); the poll loop itself never waits.
        """
        job = self.job
        if job is None:
            return False
        return job.wait(timeout_s) or job.expired()

    def _try(self, request: dict[str, Any], now_ms: int) -> None:
        """Serve ``request`` if its data is there: give it up, complete it from the registry, or start training."""
        model, start = request["model"], to_datetime(request["window_start"])
        rows = int(self.store.scalar(COUNT_SQL, {"model": model, "start": start}))
        if rows < self._need(request):
            if now_ms - request["received_at"] >= self.wait_ms:
                self._give_up(request, rows)
            return
        if self.job is not None:
            return  # one training at a time: this one waits its turn
        existing = self._existing_version(model, request["request_id"])
        if existing is not None:  # registered before a crash (or by another instance): finish, never retrain
            self._decide(request, existing, replayed=True)
            return
        failed = self._recorded_failure(model, request["request_id"])
        if failed is not None:  # failed before a crash: the same outcome, without a second training or audit row
            self._finish(request, {"request_id": request["request_id"], "outcome": "failed", "reason": failed["reason"],
                                   "rows": None, "rows_needed": request.get("rows_needed"), "replayed": True})
            return
        prepared = self._prepare(request)
        self._job_input = prepared
        self.job = TrainingJob.start(request["request_id"],
                                     lambda: self.retrainer.evaluate(prepared.data, prepared.champion),
                                     timeout_s=self.timeout_s)
        used = len(prepared.data.labels)
        self._rows.append(request_row(request, "training", self._now_ms, rows_used=used,
                                      decision=f"training a challenger on {used} labelled rows "
                                               f"({request['need']['describe']})"))
        log.info("retrainer: training a challenger for request %s (%s) on %d rows", request["request_id"], model,
                 used)

    def _collect(self) -> None:
        """Pick up the training's result: register and decide, or record why it failed."""
        job, prepared = self.job, self._job_input
        request = next((p for p in self.pending if p["request_id"] == job.request_id), None)
        if request is None:  # nothing waits for it any more
            self.job = self._job_input = None
            return
        if job.expired():
            # The thread cannot be killed; it runs on in the background and its result is dropped.
            self._fail(request, f"timed out after {self.timeout_s:g} s (retrain_timeout_s)",
                       rows=len(prepared.data.labels))
        elif not job.finished:
            return
        elif job.error is not None:
            if is_transient(job.error):
                log.warning("retrainer: request %s: training hit a dependency that is away (%s); retrying later",
                            job.request_id, job.error)
            else:
                self._fail(request, _describe(job.error), rows=len(prepared.data.labels))
        else:
            try:
                self._register(prepared, job.value)
            except Exception as exc:  # noqa: BLE001 - the job stays, so a transient failure retries registering
                if is_transient(exc):
                    raise
                self._fail(request, _describe(exc), rows=len(prepared.data.labels))
        # Only once its outcome is recorded: a registry away above leaves the job to collect again.
        self.job = self._job_input = None

    # -- steps -----------------------------------------------------------------------------

    def _need(self, request: dict[str, Any]) -> int:
        """The labelled rows ``request`` needs, worked out once (from the champion of the time) and kept with it."""
        if "rows_needed" not in request:
            champion = self.registry.resolve(request["model"], "champion")
            need = self.floor.need(champion.lineage if champion is not None else {},
                                   request_min_rows=request["min_rows"], attempt=request["attempt"])
            request["need"] = {**need.to_dict(), "describe": need.describe()}
            request["rows_needed"] = need.rows
        return int(request["rows_needed"])

    def _prepare(self, request: dict[str, Any]) -> Prepared:
        model = request["model"]
        champion = self.registry.load(model, "champion")
        parameters = {"model": model, "start": to_datetime(request["window_start"]), "limit": self._limit(request)}
        _, rows = self.store.query(TRAINING_SQL, parameters)
        data = LabelledData(
            frame=to_frame(champion.meta.contract, [r[0] for r in rows], [r[1] for r in rows], champion.estimator),
            labels=_targets(champion.meta.contract.task, rows),
            event_time_ms=np.array([r[3] for r in rows], dtype=np.int64),
            sql=TRAINING_SQL.strip(),
            rows_needed=self._need(request),
        )
        return Prepared(request, champion, data)

    def _register(self, prepared: Prepared, verdict: Verdict) -> None:
        request, champion, data = prepared.request, prepared.champion, prepared.data
        model = request["model"]
        existing = self._existing_version(model, request["request_id"])
        if existing is not None:  # the first version registered for this request wins
            self._decide(request, existing, replayed=True)
            return
        lineage = {
            "training_sql": data.sql,
            "sql_parameters": {"model": model, "window_start_ms": request["window_start"], "limit": self._limit(request)},
            "rows": len(data.labels),
            "train_rows": verdict.train_rows,
            "holdout_rows": verdict.holdout_rows,
            "holdout_from_ms": verdict.holdout_from_ms,
            "rows_needed": request.get("need", {}),
            # the reference profile is the holdout's: rows the challenger did not train on
            "profile_rows": verdict.challenger.profile_rows,
            "profile_from": {"holdout": f"the most recent {self.retrainer.holdout_fraction:.0%} of the labelled rows",
                             "from_ms": verdict.holdout_from_ms, "to_ms": verdict.holdout_to_ms,
                             "in_sample": verdict.challenger.profile_in_sample},
            "data_sha256": verdict.challenger.data_sha256,
            "parent_version": champion.meta.version,
            "retrain_request": {k: request[k] for k in ("request_id", "reason", "signals", "window_start", "window_end",
                                                        "incident_id", "attempt", "min_rows")},
            # so that a replay completes the same decision without training again
            "decision": {"promote": verdict.promote, "reason": verdict.reason},
            "code_version": f"driftline {driftline.__version__}",
        }
        if refits_by_clone(champion.meta.recipe):
            lineage["refit"] = f"sklearn.base.clone of v{champion.meta.version}'s pipeline (registered without a recipe)"
        version = self.registry.register(
            model, verdict.challenger.estimator, champion.meta.contract, actor="retrainer",
            reason=f"retrained for request {request['request_id']} ({request['reason']})",
            recipe=champion.meta.recipe, params=champion.meta.recipe.get("params", {}), metrics=verdict.metrics,
            lineage=lineage, profile=verdict.challenger.profile, request_id=request["request_id"],
        )
        self._decide(request, version, replayed=False)

    def _decide(self, request: dict[str, Any], version: Any, *, replayed: bool) -> None:
        """Move the aliases (or record the rejection) for ``version``; a step already in the audit log is skipped."""
        model, request_id = request["model"], request["request_id"]
        promote, reason = self._decision_of(version)
        # This request's rows; a row without a request id (written before audit rows had one) counts when it is
        # on this version, which only this request's challenger can be.
        audit = [row for row in self.registry.audit_log(model)
                 if row.get("version") == version.version and row.get("actor") == "retrainer"
                 and row.get("request_id") in (None, request_id)]

        def recorded(action: str, alias: str | None) -> bool:
            return any(row.get("action") == action and row.get("alias") == alias for row in audit)

        if not recorded("alias_moved", "challenger"):
            self.registry.set_alias(model, "challenger", version.version, actor="retrainer", reason=reason,
                                    request_id=request_id)
        if promote:
            if not recorded("alias_moved", "champion"):
                self.registry.set_alias(model, "champion", version.version, actor="retrainer", reason=reason,
                                        request_id=request_id)
        elif not recorded("rejected", None):
            self.registry.record(model, version.version, "rejected", actor="retrainer", reason=reason,
                                 request_id=request_id)
        lineage = version.lineage
        outcome = {"request_id": request_id, "outcome": "promoted" if promote else "rejected",
                   "version": version.version, "reason": reason, "metrics": version.metrics,
                   "rows": lineage.get("rows"), "train_rows": lineage.get("train_rows"),
                   "holdout_rows": lineage.get("holdout_rows"), "rows_needed": request.get("rows_needed")}
        if replayed:
            outcome["replayed"] = True
        self._finish(request, outcome)
        log.warning("retrainer: %s v%d %s%s: %s", model, version.version, outcome["outcome"],
                    " (replayed request, not retrained)" if replayed else "", reason)

    def _decision_of(self, version: Any) -> tuple[bool, str]:
        """The gate's decision recorded with ``version``; recomputed from its metrics for older versions."""
        decision = version.lineage.get("decision")
        if decision:
            return bool(decision["promote"]), str(decision["reason"])
        mine = {k[len("holdout_"):]: v for k, v in version.metrics.items() if k.startswith("holdout_")}
        theirs = {k[len("champion_holdout_"):]: v for k, v in version.metrics.items() if k.startswith("champion_holdout_")}
        try:
            return self.retrainer.gate(mine, theirs, version.contract.task, version.lineage.get("parent_version", 0))
        except ValueError as exc:
            return False, f"no decision recorded with v{version.version} and none can be made: {exc}"

    def _give_up(self, request: dict[str, Any], rows: int) -> None:
        model = request["model"]
        reason = (f"request {request['request_id']} given up: {rows} labelled rows since the drift, "
                  f"{self._need(request)} needed ({request['need']['describe']})")
        champion = self.registry.resolve(model, "champion")
        if champion is not None:
            self.registry.record(model, champion.version, "retrain_skipped", actor="retrainer", reason=reason,
                                 request_id=request["request_id"])
        self._finish(request, {"request_id": request["request_id"], "outcome": "skipped", "reason": reason,
                               "rows": rows, "rows_needed": request.get("rows_needed")})

    def _fail(self, request: dict[str, Any], why: str, *, rows: int | None = None) -> None:
        """Record a training that cannot succeed as the request's outcome, on the champion's audit log.

        ``rows`` are the labelled rows the training had, when it got that far.
        """
        model = request["model"]
        reason = f"request {request['request_id']} failed: {why}"
        champion = self.registry.resolve(model, "champion")
        if champion is not None:
            self.registry.record(model, champion.version, "retrain_failed", actor="retrainer", reason=reason,
                                 request_id=request["request_id"])
        self._finish(request, {"request_id": request["request_id"], "outcome": "failed", "reason": reason,
                               "rows": rows, "rows_needed": request.get("rows_needed")})
        log.error("retrainer: %s", reason)

    def _finish(self, request: dict[str, Any], outcome: dict[str, Any]) -> None:
        self._rows.append(request_row(request, outcome["outcome"], self._now_ms, decision=outcome["reason"],
                                      challenger_version=outcome.get("version"), rows_used=outcome.get("rows")))
        self.pending = [p for p in self.pending if p["request_id"] != request["request_id"]]
        self.done = (self.done + [request["request_id"]])[-DONE_KEPT:]
        self.outcomes = (self.outcomes + [outcome])[-OUTCOMES_KEPT:]

    def _existing_version(self, model: str, request_id: str) -> Any:
        """The first version registered for ``request_id`` (by its lineage), or None."""
        # One listing per request about to train; a registry lookup by lineage would spare the full listing.
        matches = [v for v in self.registry.versions(model)
                   if (v.lineage.get("retrain_request") or {}).get("request_id") == request_id]
        return min(matches, key=lambda v: v.version) if matches else None

    def _limit(self, request: dict[str, Any]) -> int:
        """Most rows fetched for ``request``: ``max_rows``, or its need when retrain_min_rows makes that larger."""
        return max(self.max_rows, self._need(request))

    def _recorded_failure(self, model: str, request_id: str) -> dict[str, Any] | None:
        """The ``retrain_failed`` audit row of ``request_id``, if an earlier run recorded one."""
        prefix = f"request {request_id} failed: "

        def ours(row: dict[str, Any]) -> bool:
            if row.get("request_id") is not None:
                return row["request_id"] == request_id
            return str(row.get("reason", "")).startswith(prefix)  # a row from before audit rows had request ids

        return next((row for row in self.registry.audit_log(model) if row.get("action") == "retrain_failed"
                     and row.get("actor") == "retrainer" and ours(row)), None)

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return json.dumps({"pending": self.pending, "done": self.done}).encode()

    def restore(self, snapshot: bytes) -> None:
        state = json.loads(snapshot)
        self.pending, self.done = state["pending"], state["done"]


def _describe(exc: BaseException) -> str:
    """An exception as a reason: a ValueError's own words; anything else with its type, which says more."""
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
