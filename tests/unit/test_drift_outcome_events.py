"""Which model events answer a retrain request, and the rows the drift-detector writes for the loop."""

import json

import pytest

from driftline.drift.policy import AlertPolicy, RetrainDecision, Trigger
from driftline.services.drift_detector.logic import DriftDetector
from driftline.services.drift_detector.retrain_loop import audit_row, outcome_of, requested_row
from driftline.drift import WindowSpec

EVENT = {"model": "pump", "version": 4, "action": "rejected", "alias": None, "previous_version": None,
         "sha256": "ab" * 32, "actor": "retrainer", "reason": "lost", "occurred_at": 1_767_225_600_000,
         "request_id": "r1"}


@pytest.mark.parametrize("action, alias, outcome", [
    ("alias_moved", "champion", "promoted"), ("rejected", None, "rejected"), ("retrain_failed", None, "failed"),
    ("retrain_skipped", None, "skipped"),
    ("alias_moved", "challenger", None),  # every challenger moves there first: not an answer
    ("registered", None, None), ("rolled_back", "champion", None), ("model_load_failed", None, None),
])
def test_the_outcome_a_model_event_reports(action, alias, outcome):
    assert outcome_of({**EVENT, "action": action, "alias": alias}) == outcome
    assert outcome_of({**EVENT, "action": action, "alias": alias, "request_id": None}) is None  # a person's move
    assert outcome_of({k: v for k, v in EVENT.items() if k != "request_id"} | {"action": action}) is None


def test_audit_rows_have_every_column_with_empty_strings_for_none():
    row = audit_row(EVENT)
    assert list(row) == ["model", "version", "action", "alias", "previous_version", "actor", "reason", "request_id",
                         "sha256", "occurred_at"]
    assert (row["alias"], row["request_id"]) == ("", "r1")
    assert row["occurred_at"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert audit_row({**EVENT, "request_id": None})["request_id"] == ""
    for bad in ({"version": -1}, {"previous_version": 2**32}):  # not a registry's: the runner dead-letters it
        with pytest.raises(ValueError, match="version"):
            audit_row({**EVENT, **bad})


def test_a_requested_row_has_every_column_of_retrain_requests():
    decision = RetrainDecision("r2", "pump", 4, "data_drift", (Trigger("data", "temp", "psi", 0.4, 0, 60_000),),
                               0, 60_000, 60_000, incident_id="r1", attempt=2)
    row = requested_row(decision, now_ms=123)
    assert list(row) == ["request_id", "incident_id", "attempt", "model", "model_version", "reason", "signals",
                         "window_start", "window_end", "requested_at", "min_rows", "status", "status_rank",
                         "decision", "challenger_version", "rows_used", "updated_at"]
    assert (row["incident_id"], row["attempt"], row["status"], row["status_rank"]) == ("r1", 2, "requested", 0)
    assert json.loads(row["signals"])[0]["feature"] == "temp"


def test_the_detector_passes_answers_to_its_policy_once():
    policy = AlertPolicy(cooldown_ms=3_600_000)
    detector = DriftDetector(lambda model, version: None, WindowSpec("tumbling", "time", 60_000), policy)
    decision = policy.observe_concept("pump", 4, "ADWIN", 10, 1000)
    answer = {**EVENT, "request_id": decision.request_id}
    noise = {**EVENT, "action": "registered", "request_id": None}
    (seen,) = detector.observe_model_events([noise, answer])
    assert (seen.outcome, seen.applied) == ("rejected", True)
    (again,) = detector.observe_model_events([answer])
    assert (again.outcome, again.applied) == ("rejected", False)
    assert policy.status("pump", 4)["cooldown_until_ms"] == 1000 + policy.rearm_after_ms


def test_a_labeled_batch_of_two_versions_after_a_detection_in_the_first_is_handled_whole():
    """Found at review: the loop over a version's detections reused the name of the batch's
    record index, so the next version of the same batch raised TypeError (and the runner fell
    back to handling the batch record by record). Right after a promotion, a batch holding the
    old and the new version is the usual case."""
    import numpy as np

    from driftline.drift import AlertPolicy, ReferenceProfile, WindowSpec

    rng = np.random.default_rng(1)
    profile = ReferenceProfile.fit(numeric={"depth": rng.uniform(0, 1, 500)}, categorical={}, score=rng.uniform(0, 1, 500))
    detector = DriftDetector(lambda model, version: profile, WindowSpec("tumbling", "count", size=1000), AlertPolicy())
    errors = [0.0] * 600 + [1.0] * 600  # version 1's errors jump: its detector fires
    labeled = [{"model": "wells", "event_id": f"w{i}", "model_version": 1, "role": "champion", "error": e,
                "event_time": 1_780_000_000_000 + i, "label_time": 1_780_000_000_500 + i} for i, e in enumerate(errors)]
    labeled += [{**record, "event_id": f"v2-{i}", "model_version": 2} for i, record in enumerate(labeled[:50])]
    positions = [(0, offset) for offset in range(len(labeled))]
    out = detector.observe_labeled(labeled, now_ms=1_780_000_100_000, positions=positions)
    fired = [s for s in out.signals if s["kind"] == "concept"]
    assert fired and {s["model_version"] for s in fired} == {1}
    assert all(600 <= s["offset"] < 1200 for s in fired)  # placed at the record of version 1 that fired it
