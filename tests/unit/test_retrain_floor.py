"""How much data a challenger gets (issue 11, item 2): the champion's training size by default, more for a
re-armed incident, capped; and the retrainer's report of it: request ids on its audit rows and ModelEvents,
``retrain_requests`` rows per status, rows used in lineage and outcomes.

A model of our own (a kiln: temperatures, a glaze category, cracked or not); the store is a stand-in that
answers the retrainer's count and training queries from a list of rows, the registry a real one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftline.contract import FeatureContract
from driftline.models import DEFAULT_RECIPE
from driftline.services.retrainer.floor import RowFloor
from driftline.services.retrainer.logic import Retrainer
from driftline.services.retrainer.request_rows import STATUS_RANK
from driftline.services.retrainer.service import RetrainerService
from driftline.timeutil import to_datetime
from driftline.training import train

MODEL = "kiln"
KILN = FeatureContract(numeric=("peak_temp_c", "ramp_c_per_h"), categorical=("glaze",), task="classification",
                       classes=("cracked", "sound"))
WAIT_S = 60.0


def kiln_rows(n: int, seed: int, *, flipped: bool = False, only: str | None = None) -> list[tuple]:
    """Rows as TRAINING_SQL returns them: (numeric, categorical, label, event_ms, value)."""
    rng = np.random.default_rng(seed)
    peak, ramp = rng.normal(1200, 40, n), rng.gamma(3.0, 40.0, n)
    glaze = rng.choice(["celadon", "tenmoku", "shino"], n)
    cracked = (peak - 1200) / 40 + (ramp - 120) / 60 > 0.3
    labels = np.where(cracked != flipped, "cracked", "sound")
    if only is not None:
        labels[:] = only
    return [({"peak_temp_c": float(peak[i]), "ramp_c_per_h": float(ramp[i])}, {"glaze": str(glaze[i])},
             str(labels[i]), 1_000 * i, None) for i in range(n)]


class RowsStore:
    """Answers COUNT_SQL with ``count`` (default: all rows) and TRAINING_SQL with the newest ``limit`` rows."""

    def __init__(self, rows: list[tuple], count: int | None = None):
        self.rows, self.count, self.limits = rows, count, []

    def scalar(self, sql, parameters=None):
        return len(self.rows) if self.count is None else self.count

    def query(self, sql, parameters=None):
        self.limits.append(parameters["limit"])
        return [], self.rows[-parameters["limit"]:]


def request(request_id: str, *, attempt: int = 1, min_rows: int = 0, incident: str = "") -> object:
    class Item:
        record = {"request_id": request_id, "model": MODEL, "model_version": 1, "reason": "score psi 0.31",
                  "signals": [], "window_start": to_datetime(0), "window_end": to_datetime(60_000),
                  "requested_at": to_datetime(60_000), "incident_id": incident, "attempt": attempt,
                  "min_rows": min_rows}
    return Item()


@pytest.fixture
def champion(registry):
    """v1 trained on 1,400 rows, as its lineage says (a ``driftline model register`` lineage has train_rows)."""
    rows = kiln_rows(1400, seed=1)
    frame = pd.DataFrame([{**n, **c} for n, c, *_ in rows])
    trained = train(DEFAULT_RECIPE, KILN, frame, np.array([r[2] for r in rows], dtype=object))
    registry.register(MODEL, trained.estimator, KILN, actor="test", recipe=DEFAULT_RECIPE, profile=trained.profile,
                      lineage={"train_rows": 1400})
    registry.set_alias(MODEL, "champion", 1, actor="test", reason="first")
    return registry


def service_for(registry, store, *, min_rows=500, max_rows=50_000, share=1.0) -> RetrainerService:
    logic = Retrainer(min_rows=min_rows)
    return RetrainerService(logic, store, registry, max_rows=max_rows,
                            floor=RowFloor(min_rows=min_rows, max_rows=max_rows, holdout_fraction=0.3,
                                           champion_share=share))


def run(service: RetrainerService, *items, now_ms: int = 1_000):
    """handle() the items, wait for a training, and collect it; the retrain_requests rows written."""
    rows = service.handle(list(items), now_ms).rows.get("retrain_requests", [])
    if service.busy:
        assert service.wait_for_training(WAIT_S)
        rows += service.handle([], now_ms).rows.get("retrain_requests", [])
    return rows


# -- the floor, pure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lineage, attempt, request_min, expected", [
    ({"train_rows": 1400}, 1, 0, 2000),  # 1,400 training rows once 30 % is held out
    ({"train_rows": 1400}, 2, 0, 4000),  # a re-armed incident asks twice as much
    ({"train_rows": 1400}, 3, 0, 8000),
    ({"train_rows": 1400}, 9, 0, 50_000),  # capped at max_rows
    ({"train_rows": 1400}, 1, 3000, 3000),  # the request asks more than the floor
    ({"train_rows": 1400}, 2, 3000, 6000),
    ({"rows": 7000}, 1, 0, 10_000),  # the demo's lineage says rows
    ({"profile_rows": 350}, 1, 0, 500),  # a pipeline trained elsewhere: its reference rows; min_rows wins
    ({}, 1, 0, 500),  # nothing known: retrain_min_rows
    ({}, 3, 0, 2000),  # ... which doubles too
    ({"train_rows": True}, 1, 0, 500),  # a flag is not a row count
])
def test_the_need_follows_the_champion_the_request_and_the_attempt(lineage, attempt, request_min, expected):
    need = RowFloor(min_rows=500, max_rows=50_000, holdout_fraction=0.3).need(
        lineage, request_min_rows=request_min, attempt=attempt)
    assert need.rows == expected, need
    assert str(expected) in need.describe()


def test_the_absolute_bound_wins_over_the_cap_and_a_zero_share_turns_the_champion_floor_off():
    assert RowFloor(min_rows=5000, max_rows=1000).need({"train_rows": 100}, attempt=4).rows == 5000
    off = RowFloor(min_rows=500, holdout_fraction=0.3, champion_share=0).need({"train_rows": 1400})
    assert off.rows == 500 and off.champion_floor == 0
    half = RowFloor(min_rows=500, holdout_fraction=0.3, champion_share=0.5).need({"train_rows": 1400})
    assert half.rows == 1000
    with pytest.raises(ValueError, match="holdout_fraction"):
        RowFloor(holdout_fraction=1.0)


# -- the service waits for its need, and reports what it used --------------------------------------

def test_a_request_waits_for_the_champions_training_size_then_trains_on_it(champion):
    store = RowsStore(kiln_rows(2000, seed=2, flipped=True), count=1999)
    service = service_for(champion, store)
    assert run(service, request("r1")) == [] and not service.busy  # 1,999 < 2,000: waiting
    store.count = 2000
    rows = run(service)
    assert [o["outcome"] for o in service.outcomes] == ["promoted"]
    (outcome,) = service.outcomes
    assert (outcome["rows"], outcome["train_rows"], outcome["holdout_rows"], outcome["rows_needed"]) == \
        (2000, 1400, 600, 2000)
    lineage = champion.get(MODEL, 2).lineage
    assert (lineage["rows"], lineage["train_rows"], lineage["holdout_rows"]) == (2000, 1400, 600)
    assert lineage["rows_needed"]["champion_rows"] == 1400 and lineage["rows_needed"]["champion_rows_from"] == "train_rows"
    assert lineage["profile_rows"] == 600 and lineage["profile_from"]["in_sample"] is False
    assert {f["n_reference"] for f in champion.get(MODEL, 2).profile["features"]} == {600}
    # the training row and the outcome row, every column of the table in each
    assert [(r["status"], r["status_rank"], r["rows_used"], r["challenger_version"]) for r in rows] == \
        [("training", 1, 2000, None), ("promoted", 2, 2000, 2)]
    assert "challenger accuracy" in rows[1]["decision"]
    assert all(r["incident_id"] == "r1" and r["attempt"] == 1 for r in rows)


def test_a_second_attempt_needs_twice_the_rows(champion):
    store = RowsStore(kiln_rows(4000, seed=3, flipped=True), count=3999)
    service = service_for(champion, store)
    assert run(service, request("r2", attempt=2, incident="r1")) == []
    assert service.pending[0]["rows_needed"] == 4000  # 2,000 doubled
    store.count = 4000
    rows = run(service)
    assert store.limits == [50_000] and service.outcomes[-1]["rows"] == 4000
    assert champion.get(MODEL, 2).lineage["retrain_request"]["attempt"] == 2
    assert [(r["status"], r["incident_id"], r["attempt"]) for r in rows] == \
        [("training", "r1", 2), ("promoted", "r1", 2)]


def test_a_request_given_up_says_what_it_needed_and_names_itself(champion):
    service = service_for(champion, RowsStore(kiln_rows(10, seed=4), count=1500))
    service.wait_ms = 0
    rows = run(service, request("r3", min_rows=3000))
    (outcome,) = service.outcomes
    assert outcome["outcome"] == "skipped" and outcome["rows"] == 1500 and outcome["rows_needed"] == 3000
    (row,) = rows
    assert (row["status"], row["status_rank"], row["rows_used"], row["min_rows"]) == ("skipped", 2, 1500, 3000)
    (audit,) = [a for a in champion.audit_log(MODEL) if a["action"] == "retrain_skipped"]
    assert audit["request_id"] == "r3" and "3000 needed" in audit["reason"]


# -- request ids on every registry call of the retrainer -------------------------------------------

def test_every_retrainer_audit_row_and_model_event_names_its_request(champion):
    promoted = service_for(champion, RowsStore(kiln_rows(2000, seed=5, flipped=True)))
    run(promoted, request("p1"))
    rejected = service_for(champion, RowsStore(kiln_rows(2000, seed=6, flipped=True)))  # v2 knows it: no gain
    run(rejected, request("j1"))
    failed = service_for(champion, RowsStore(kiln_rows(2000, seed=7, only="sound")))
    rows = run(failed, request("f1"))
    assert [o["outcome"] for o in promoted.outcomes + rejected.outcomes + failed.outcomes] == \
        ["promoted", "rejected", "failed"]
    assert rows[-1]["status"] == "failed" and rows[-1]["rows_used"] == 2000 and rows[-1]["challenger_version"] is None
    by_request = {}
    for row in champion.audit_log(MODEL):
        if row["actor"] == "retrainer":
            by_request.setdefault(row["request_id"], []).append((row["action"], row["alias"]))
    assert by_request == {
        "p1": [("registered", None), ("alias_moved", "challenger"), ("alias_moved", "champion")],
        "j1": [("registered", None), ("alias_moved", "challenger"), ("rejected", None)],
        "f1": [("retrain_failed", None)],
    }
    events = [e for _, e in champion.pending_events(1000) if e["actor"] == "retrainer"]
    assert [(e["action"], e["alias"], e["request_id"]) for e in events] == [
        ("registered", None, "p1"), ("alias_moved", "challenger", "p1"), ("alias_moved", "champion", "p1"),
        ("registered", None, "j1"), ("alias_moved", "challenger", "j1"), ("rejected", None, "j1"),
        ("retrain_failed", None, "f1")]


def test_a_replay_finds_its_failure_by_request_id_and_older_rows_by_their_reason(champion):
    store = RowsStore(kiln_rows(2000, seed=8, only="cracked"))
    run(service_for(champion, store), request("f2"))
    again = service_for(champion, store)
    run(again, request("f2"))
    assert again.outcomes[-1]["replayed"] and len([a for a in champion.audit_log(MODEL)
                                                   if a["action"] == "retrain_failed"]) == 1
    # an audit row written before rows had request ids: found by its reason text
    champion.record(MODEL, 1, "retrain_failed", actor="retrainer", reason="request old-1 failed: one class")
    older = service_for(champion, store)
    run(older, request("old-1"))
    assert older.outcomes[-1]["replayed"] and older.outcomes[-1]["reason"] == "request old-1 failed: one class"
    # ... but a row naming another request is never taken for this one's
    champion.record(MODEL, 1, "retrain_failed", actor="retrainer", reason="request new-1 failed: x",
                    request_id="someone-else")
    fresh = service_for(champion, store)
    run(fresh, request("new-1"))
    assert "replayed" not in fresh.outcomes[-1]


def test_retrain_request_rows_have_the_tables_columns_and_insert(champion, store):
    rows = run(service_for(champion, RowsStore(kiln_rows(2000, seed=9, flipped=True))), request("s1"))
    _, described = store.query("DESCRIBE TABLE retrain_requests")
    columns = [row[0] for row in described]
    assert all(list(r) == columns for r in rows), (columns, list(rows[0]))
    store.insert("retrain_requests", rows)
    _, got = store.query("SELECT status, status_rank, rows_used, challenger_version FROM retrain_requests FINAL "
                         "WHERE request_id = 's1'")
    assert got == [("promoted", 2, 2000, 2)]
    assert set(STATUS_RANK) == {"requested", "training", "promoted", "rejected", "failed", "skipped"}
