"""The drift-detector hears the outcomes of its requests on the ``models`` topic (embedded mode).

The retrainer is left out: the outcomes are ModelEvents with a ``request_id``,
published here as the registry's outbox publishes the retrainer's audit rows. A
covariate shift of a gearbox model of our own asks for a retrain; the request is
rejected; after the back-off the incident asks again (attempt 2) while the drift
goes on; that one is promoted, and for the cooldown nothing more is asked, though
the new champion's windows drift too. Everything is in the store: the
``requested`` rows in ``retrain_requests``, every model event in ``audit``.
"""

from __future__ import annotations

import json

from driftline.config import Settings
from driftline.entry.embedded import Embedded
from driftline.timeutil import to_ms
from driftline.topics import MODELS

from gearbox_stream import EPOCH_MS, MODEL, WINDOW_MS, GearboxRun, Phase, register_champion, \
    register_version, stream

REARM_MS = 2 * WINDOW_MS


def model_event(app: Embedded, version: int, action: str, request_id: str, alias: str | None = None) -> dict:
    return {"model": MODEL, "version": version, "action": action, "alias": alias, "previous_version": None,
            "sha256": app.registry.get(MODEL, version).sha256, "actor": "retrainer",
            "reason": f"{action} for request {request_id}", "occurred_at": EPOCH_MS, "request_id": request_id}


def test_a_rejected_request_rearms_the_incident_and_a_promotion_cools_the_model_down(settings):
    settings = Settings(partitions=1, drift_window_size=WINDOW_MS, drift_rearm_after_ms=REARM_MS)
    app = Embedded(settings)
    try:
        retrainer = next(r for r in app.runners if r.service.name == "retrainer")
        app.runners.remove(retrainer)  # the outcomes are ours to give
        retrainer.close()
        detector_runner = next(r for r in app.runners if r.service.name == "drift-detector")
        # The runner `driftline up` and `driftline serve drift-detector` build alike (wiring.make_runner):
        # model events are read by a control consumer of its own, the back-off comes from the settings.
        assert detector_runner.control is not None and detector_runner.control.topics == [MODELS]
        assert detector_runner.service.detector.policy.rearm_after_ms == REARM_MS
        register_champion(app)
        run = GearboxRun(app, labels=False)
        frame = stream([Phase(2400), Phase(12_000, hot=True), Phase(6_000, hot=True)])

        run.feed(frame.iloc[:4800])  # two normal windows, two hot ones: one request
        (first,) = run.requests
        assert (first["attempt"], first["incident_id"], first["reason"]) == (1, first["request_id"], "data_drift")
        # the rejection is heard before the next events are counted, at the detector's event time now
        heard_ms = detector_runner.service.detector.policy.event_time(MODEL)
        run.publish_model_event(model_event(app, 1, "rejected", first["request_id"]))

        run.feed(frame.iloc[4800:14_400])
        assert len(run.requests) == 2, run.requests
        second = run.requests[1]
        assert (second["attempt"], second["incident_id"]) == (2, first["request_id"])
        # re-armed REARM_MS of event time after the rejection was heard: the first window to close after that
        assert heard_ms + REARM_MS <= to_ms(second["requested_at"]) < heard_ms + REARM_MS + WINDOW_MS

        # Promoted: v2 (trained on normal readings, so its own windows drift at once) becomes champion.
        v2 = register_version(app, seed=2)
        app.registry.set_alias(MODEL, "champion", v2, actor="retrainer", reason="won")
        for event in (model_event(app, v2, "alias_moved", second["request_id"], alias="champion"),
                      model_event(app, 1, "rejected", first["request_id"])):  # and a replayed answer
            run.publish_model_event(event)
        run.feed(frame.iloc[14_400:])
        assert len(run.requests) == 2  # v2's windows drift, but the model cools down for an hour of event time

        _, v2_windows = app.store.query(
            "SELECT count() FROM drift_metrics FINAL WHERE model = {m:String} AND model_version = {v:UInt32} "
            "AND statistic = 'psi' AND value >= 0.25", {"m": MODEL, "v": v2})
        assert v2_windows[0][0] >= 3

        _, rows = app.store.query(
            "SELECT request_id, incident_id, attempt, status, status_rank, signals, min_rows, model_version "
            "FROM retrain_requests FINAL WHERE model = {m:String} ORDER BY attempt", {"m": MODEL})
        assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows] == [
            (first["request_id"], first["request_id"], 1, "requested", 0, 0, 1),
            (second["request_id"], first["request_id"], 2, "requested", 0, 0, 1)]
        assert {s["feature"] for s in json.loads(rows[0][5])} >= {"oil_temp_c"}

        _, audit = app.store.query(
            "SELECT version, action, alias, request_id, actor FROM audit FINAL WHERE model = {m:String} "
            "ORDER BY occurred_at, version, action", {"m": MODEL})
        assert ("1", "alias_moved", "champion", "", "test") in {tuple(map(str, r)) for r in audit}
        answered = [r for r in audit if r[3]]
        assert sorted(answered) == sorted([(1, "rejected", "", first["request_id"], "retrainer"),
                                           (v2, "alias_moved", "champion", second["request_id"], "retrainer")])
    finally:
        app.close()
