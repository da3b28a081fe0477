"""The retrainer's failure paths (issue 10, items 3 and 5), on a model of our own: a pump sensor.

The store is a stand-in that answers the retrainer's two queries from a list of
rows (or raises, to play a store that is away); the registry is a real one in a
temporary folder. Training runs in the service's worker thread, so every test
waits for it with :meth:`RetrainerService.wait_for_training` before the next
``handle()`` collects the result.
"""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pandas as pd
import pytest

from driftline.contract import FeatureContract
from driftline.failure import is_transient
from driftline.models import DEFAULT_RECIPE
from driftline.services.retrainer import service as service_module
from driftline.services.retrainer.logic import Retrainer
from driftline.services.retrainer.service import RetrainerService
from driftline.timeutil import to_datetime
from driftline.training import train

MODEL = "pump"
PUMP = FeatureContract(numeric=("bearing_temp", "vibration_mm_s"), categorical=("site",), task="classification",
                       classes=("fault", "ok"))
WAIT_S = 60.0  # upper bound on waiting for a training; the tests' trainings take well under a second


def pump_rows(n: int, seed: int, *, only: str | None = None, flipped: bool = False) -> list[tuple]:
    """Rows as TRAINING_SQL returns them: (numeric, categorical, label, event_ms, value)."""
    rng = np.random.default_rng(seed)
    temp, vibration = rng.normal(60, 8, n), rng.gamma(2.0, 1.5, n)
    site = rng.choice(["north", "south"], n)
    fault = (temp - 60) / 8 + (vibration - 3) > 0.5
    labels = np.where(fault != flipped, "fault", "ok")
    if only is not None:
        labels[:] = only
    return [({"bearing_temp": float(temp[i]), "vibration_mm_s": float(vibration[i])}, {"site": str(site[i])},
             str(labels[i]), 1_000 * i, None) for i in range(n)]


class RowsStore:
    """Answers COUNT_SQL and TRAINING_SQL from ``rows``; ``down`` plays a store that cannot be reached."""

    def __init__(self, rows: list[tuple], count: int | None = None):
        self.rows, self.count, self.down = rows, count, False

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")

    def scalar(self, sql: str, parameters=None):
        self._check()
        return len(self.rows) if self.count is None else self.count

    def query(self, sql: str, parameters=None):
        self._check()
        return [], self.rows


class CountingRetrainer(Retrainer):
    """A Retrainer that counts its trainings; the next one waits on ``hold`` (an Event) when it is set."""

    def __init__(self, **kwargs):
        super().__init__(**{"min_rows": 200, **kwargs})
        self.trainings = 0
        self.hold: threading.Event | None = None

    def evaluate(self, data, champion):
        self.trainings += 1
        hold, self.hold = self.hold, None  # only the training that takes it is held
        if hold is not None:
            hold.wait(WAIT_S)
        return super().evaluate(data, champion)


def request(request_id: str) -> object:
    class Item:
        record = {"request_id": request_id, "model": MODEL, "model_version": 1, "reason": "concept drift",
                  "signals": [], "window_start": to_datetime(0), "window_end": to_datetime(0),
                  "requested_at": to_datetime(0)}
    return Item()


def settle(service: RetrainerService, now_ms: int = 0) -> None:
    """Wait for the training under way, then let a handle() collect it."""
    assert service.wait_for_training(WAIT_S)
    service.handle([], now_ms)


@pytest.fixture
def champion(registry):
    frame_rows = pump_rows(3000, seed=1)
    frame = pd.DataFrame([{**n, **c} for n, c, *_ in frame_rows])
    trained = train(DEFAULT_RECIPE, PUMP, frame, np.array([r[2] for r in frame_rows], dtype=object))
    registry.register(MODEL, trained.estimator, PUMP, actor="test", recipe=DEFAULT_RECIPE, profile=trained.profile)
    registry.set_alias(MODEL, "champion", 1, actor="test", reason="first")
    return registry


def versions_for(registry, request_id: str) -> list[int]:
    return [v.version for v in registry.versions(MODEL)
            if (v.lineage.get("retrain_request") or {}).get("request_id") == request_id]


def failed_rows(registry) -> list[dict]:
    return [row for row in registry.audit_log(MODEL) if row["action"] == "retrain_failed"]


# -- outside the poll loop -------------------------------------------------------------------

def test_handle_returns_while_training_runs_and_a_later_handle_registers_the_result(champion):
    logic = CountingRetrainer()
    release = logic.hold = threading.Event()
    service = RetrainerService(logic, RowsStore(pump_rows(1000, seed=2, flipped=True)), champion)
    service.handle([request("r1")], 0)  # returns with the training held in its worker
    assert service.busy and not service.job.finished
    assert [p["request_id"] for p in json.loads(service.snapshot())["pending"]] == ["r1"]
    service.handle([], 0)
    assert service.outcomes == [] and versions_for(champion, "r1") == []  # nothing to collect yet
    release.set()
    settle(service)
    assert logic.trainings == 1
    assert [o["outcome"] for o in service.outcomes] == ["promoted"]  # the concept flipped: v2 wins
    assert versions_for(champion, "r1") == [2] and champion.aliases(MODEL)["champion"] == 2
    assert not service.busy and service.pending == [] and service.done == ["r1"]


# -- failed trainings are outcomes, and the next request is served ---------------------------

@pytest.mark.parametrize("case, store, logic, expected", [
    ("one class", RowsStore(pump_rows(1000, seed=3, only="ok")), {},
     "the 700 training rows hold one class only (ok); a classifier needs labels of at least 2 classes"),
    ("too few rows", RowsStore(pump_rows(50, seed=4), count=1000), {},
     "50 labelled rows; the retrainer needs 200"),
    ("gate metric the task lacks", RowsStore(pump_rows(1000, seed=5)), {"metric": "mae"},
     "gate metric 'mae' is not available for a classification model"),
])
def test_a_training_that_cannot_succeed_is_a_failed_outcome_with_its_reason(champion, case, store, logic, expected):
    service = RetrainerService(CountingRetrainer(**logic), store, champion)
    service.handle([request("bad")], 0)
    settle(service)
    (outcome,) = service.outcomes
    assert outcome["outcome"] == "failed" and expected in outcome["reason"], outcome
    (row,) = failed_rows(champion)
    assert row["version"] == 1 and row["actor"] == "retrainer" and expected in row["reason"]
    assert service.pending == [] and service.done == ["bad"] and not service.busy
    assert champion.aliases(MODEL) == {"champion": 1} and len(champion.versions(MODEL)) == 1


def test_a_fit_that_raises_is_failed_once_and_the_next_request_is_served(champion, monkeypatch):
    store = RowsStore(pump_rows(1000, seed=6, flipped=True))
    logic = CountingRetrainer()
    service = RetrainerService(logic, store, champion)

    def explode(*args, **kwargs):
        raise RuntimeError("solver diverged")

    monkeypatch.setattr("driftline.services.retrainer.logic.train", explode)
    service.handle([request("r1")], 0)
    settle(service)
    for _ in range(3):  # before: the same exception on every batch, forever
        service.handle([], 0)
    assert logic.trainings == 1
    assert service.outcomes[-1] == {"request_id": "r1", "outcome": "failed",
                                    "reason": "request r1 failed: RuntimeError: solver diverged",
                                    "rows": 1000, "rows_needed": 200}
    monkeypatch.undo()
    service.handle([request("r2")], 0)
    settle(service)
    assert [o["outcome"] for o in service.outcomes] == ["failed", "promoted"]
    assert versions_for(champion, "r2") == [2]


def test_a_training_past_the_timeout_fails_and_the_service_goes_on(champion):
    logic = CountingRetrainer()
    release = logic.hold = threading.Event()  # the first training does not end by itself
    service = RetrainerService(logic, RowsStore(pump_rows(1000, seed=7, flipped=True)), champion, timeout_s=0.5)
    try:
        service.handle([request("slow")], 0)
        abandoned = service.job
        settle(service)  # the deadline passes; this handle() records the failure
        assert service.outcomes == [{"request_id": "slow", "outcome": "failed",
                                     "reason": "request slow failed: timed out after 0.5 s (retrain_timeout_s)",
                                     "rows": 1000, "rows_needed": 200}]
        assert "timed out after 0.5 s" in failed_rows(champion)[0]["reason"]
        assert not service.busy and not abandoned.finished and service.pending == []
        service.timeout_s = WAIT_S  # room for a real training on a busy machine
        service.handle([request("next")], 0)  # served beside the abandoned thread
        assert service.job.request_id == "next"
    finally:
        release.set()
    assert abandoned.join(WAIT_S)  # the abandoned training ends late; its result must be dropped
    settle(service)
    assert [o["outcome"] for o in service.outcomes] == ["failed", "promoted"]
    assert versions_for(champion, "slow") == [] and versions_for(champion, "next") == [2]


# -- idempotent on the request id -----------------------------------------------------------

class CrashAfterRegister:
    """The registry, except that the first alias move kills the "process" (it was registered, not committed)."""

    def __init__(self, registry):
        self._registry = registry

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def set_alias(self, *args, **kwargs):
        raise KeyboardInterrupt("killed after registering the challenger")


def test_a_crash_after_registering_then_a_replay_keeps_one_version_and_completes_the_decision(champion):
    store = RowsStore(pump_rows(1000, seed=8, flipped=True))
    first = RetrainerService(CountingRetrainer(), store, CrashAfterRegister(champion))
    first.handle([request("r1")], 0)
    checkpointed = first.snapshot()  # a request in training is pending in the snapshot
    assert first.wait_for_training(WAIT_S)
    with pytest.raises(KeyboardInterrupt):
        first.handle([], 0)
    assert versions_for(champion, "r1") == [2] and "challenger" not in champion.aliases(MODEL)

    logic = CountingRetrainer()
    restarted = RetrainerService(logic, store, champion)
    restarted.restore(checkpointed)
    restarted.handle([request("r1")], 0)  # the uncommitted record is replayed too
    assert logic.trainings == 0 and not restarted.busy  # completed from the registry, not retrained
    (outcome,) = restarted.outcomes
    assert outcome["outcome"] == "promoted" and outcome["version"] == 2 and outcome["replayed"]
    assert versions_for(champion, "r1") == [2]
    assert champion.aliases(MODEL) == {"champion": 2, "challenger": 2}


def test_replaying_a_completed_request_changes_nothing(champion):
    store = RowsStore(pump_rows(1000, seed=9))  # same concept: the challenger is rejected
    service = RetrainerService(CountingRetrainer(), store, champion)
    service.handle([request("r1")], 0)
    settle(service)
    assert service.outcomes[0]["outcome"] == "rejected"
    audit_before = champion.audit_log(MODEL)

    logic = CountingRetrainer()
    fresh = RetrainerService(logic, store, champion)  # no snapshot: it does not know r1 was done
    fresh.handle([request("r1")], 0)
    assert logic.trainings == 0 and fresh.outcomes[0]["outcome"] == "rejected" and fresh.outcomes[0]["replayed"]
    assert fresh.outcomes[0]["reason"] == service.outcomes[0]["reason"]
    assert champion.audit_log(MODEL) == audit_before  # no second alias move, no second rejection row
    assert versions_for(champion, "r1") == [2]


def test_a_second_training_for_the_same_request_registers_nothing(champion):
    """Two instances trained the same request; the one that registers second returns the first version."""
    store = RowsStore(pump_rows(1000, seed=10, flipped=True))
    a, b = (RetrainerService(CountingRetrainer(), store, champion) for _ in range(2))
    a.handle([request("r1")], 0)
    b.handle([request("r1")], 0)
    settle(a)
    settle(b)
    assert versions_for(champion, "r1") == [2] and len(champion.versions(MODEL)) == 2
    assert a.outcomes[0]["version"] == b.outcomes[0]["version"] == 2 and b.outcomes[0]["replayed"]


# -- transient failures stay pending --------------------------------------------------------

def test_a_store_away_propagates_and_the_request_stays_pending(champion):
    store = RowsStore(pump_rows(1000, seed=11, flipped=True))
    store.down = True
    service = RetrainerService(CountingRetrainer(), store, champion)
    with pytest.raises(ConnectionRefusedError) as raised:
        service.handle([request("r1")], 0)
    assert is_transient(raised.value)
    assert [p["request_id"] for p in service.pending] == ["r1"] and service.outcomes == [] and failed_rows(champion) == []
    store.down = False
    service.handle([request("r1")], 0)  # the runner retries the same batch: not queued twice
    settle(service)
    assert [o["outcome"] for o in service.outcomes] == ["promoted"]


class RegistryAway:
    """The registry, with ``register`` refused (connection) ``times`` times."""

    def __init__(self, registry, times: int):
        self._registry, self.times = registry, times

    def __getattr__(self, name):
        return getattr(self._registry, name)

    def register(self, *args, **kwargs):
        if self.times:
            self.times -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return self._registry.register(*args, **kwargs)


def test_a_registry_away_at_registration_keeps_the_trained_challenger_and_registers_it_later(champion):
    logic = CountingRetrainer()
    service = RetrainerService(logic, RowsStore(pump_rows(1000, seed=12, flipped=True)), RegistryAway(champion, 2))
    service.handle([request("r1")], 0)
    assert service.wait_for_training(WAIT_S)
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            service.handle([], 0)
        assert service.busy and service.outcomes == []  # neither failed nor lost
    service.handle([], 0)
    assert logic.trainings == 1 and [o["outcome"] for o in service.outcomes] == ["promoted"]
    assert versions_for(champion, "r1") == [2] and failed_rows(champion) == []


# -- bounded memory -------------------------------------------------------------------------

def test_outcomes_and_done_are_bounded(registry):
    service = RetrainerService(CountingRetrainer(), RowsStore([]), registry, wait_ms=0)  # every request given up
    service.handle([request(f"r{i}") for i in range(service_module.OUTCOMES_KEPT + 5)], 0)
    assert len(service.outcomes) == service_module.OUTCOMES_KEPT and len(service.done) == service_module.DONE_KEPT
    assert service.outcomes[-1]["request_id"] == f"r{service_module.OUTCOMES_KEPT + 4}"
    assert service.outcomes[0]["request_id"] == "r5" and service.pending == []


def test_the_timeout_is_a_setting(monkeypatch, tmp_path):
    from driftline.config import Settings

    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    monkeypatch.setenv("DRIFTLINE_RETRAIN_TIMEOUT_S", "42.5")
    assert Settings().retrain_timeout_s == 42.5
    monkeypatch.setenv("DRIFTLINE_RETRAIN_TIMEOUT_S", "0")
    with pytest.raises(Exception, match="retrain_timeout_s"):
        Settings()


def test_a_version_registered_before_decisions_were_recorded_is_decided_from_its_metrics(champion):
    """A challenger from an older retrainer (no ``lineage.decision``): the gate is recomputed from its metrics."""
    estimator = champion.load(MODEL, "champion").estimator
    champion.register(MODEL, estimator, PUMP, actor="retrainer", recipe=DEFAULT_RECIPE,
                      profile=champion.get(MODEL, 1).profile,
                      metrics={"holdout_accuracy": 0.91, "holdout_rows": 300,
                               "champion_holdout_accuracy": 0.62, "champion_holdout_rows": 300},
                      lineage={"parent_version": 1, "retrain_request": {"request_id": "old"}})
    logic = CountingRetrainer()
    service = RetrainerService(logic, RowsStore(pump_rows(1000, seed=13)), champion)
    service.handle([request("old")], 0)
    (outcome,) = service.outcomes
    assert logic.trainings == 0 and outcome["outcome"] == "promoted" and outcome["version"] == 2
    assert "challenger accuracy 0.9100 vs champion v1 0.6200" in outcome["reason"]
    assert champion.aliases(MODEL) == {"champion": 2, "challenger": 2}


def test_a_request_for_a_model_without_champion_is_failed_not_raised(registry):
    service = RetrainerService(CountingRetrainer(), RowsStore(pump_rows(1000, seed=14)), registry)
    service.handle([request("orphan")], 0)  # before: RegistryError out of handle(), on every batch
    (outcome,) = service.outcomes
    assert outcome["outcome"] == "failed" and "has no 'champion' alias" in outcome["reason"], outcome
    assert service.pending == [] and not service.busy


def test_a_replayed_request_that_failed_is_not_trained_or_recorded_again(champion):
    """A crash after the retrain_failed row, before the commit: the replay keeps the one outcome."""
    store = RowsStore(pump_rows(1000, seed=15, only="fault"))
    first = RetrainerService(CountingRetrainer(), store, champion)
    first.handle([request("r1")], 0)
    settle(first)
    assert [o["outcome"] for o in first.outcomes] == ["failed"] and len(failed_rows(champion)) == 1

    logic = CountingRetrainer()
    replayed = RetrainerService(logic, store, champion)  # restarted without the state that said r1 was done
    replayed.handle([request("r1")], 0)
    (outcome,) = replayed.outcomes
    assert logic.trainings == 0 and not replayed.busy
    # the rows the failed training had are not in the audit log: the replay says it does not know
    assert outcome == {**first.outcomes[0], "replayed": True, "rows": None}
    assert len(failed_rows(champion)) == 1
