"""A label-joiner or a predictor killed after publishing and before committing replays its batch;
the drift-detector still counts each joined label and each prediction once.

The kill is a commit that raises (the process dies there); a new runner in the same group
reads the same offsets again, as a restarted service would.
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from driftline.entry.embedded import Embedded
from driftline.entry.wiring import Context, make_runner
from driftline.services.ingest.app import create_app
from driftline.topics import LABELED, PREDICTIONS

from test_ingest_unacked import MODEL, events, labels, register


class Killed(Exception):
    pass


def kill_after_publish(app: Embedded, name: str) -> None:
    """Run ``name`` until its next commit, which dies; then start it again on the same group."""
    index, runner = next((i, r) for i, r in enumerate(app.runners) if r.service.name == name)

    def die(offsets):
        raise Killed

    runner.consumer.commit = die
    try:
        while runner.step(timeout_s=0.0):
            pass
        raise AssertionError(f"{name} had nothing to handle")
    except Killed:
        pass
    runner.consumer.close()  # the dead process leaves the group; its state was never saved past the last commit
    app.runners[index] = make_runner(name, Context(app.settings, app.bus, app.codec, app.store, app.registry))


def read_all(app: Embedded, topic: str) -> list:
    consumer = app.bus.consumer(f"probe-{topic}", [topic])
    out = []
    while batch := consumer.poll_batch(10_000, 0.0):
        out.extend(batch)
    return out


def test_replayed_labeled_and_predictions_are_counted_once(settings):
    settings = settings.model_copy(update={"drift_window_by": "count", "drift_window_size": 100,
                                           "drift_min_events": 1})
    app = Embedded(settings)
    try:
        register(app)
        client = TestClient(create_app(app.ingest))
        assert client.post("/v1/events", content=json.dumps(events(0, 400))).status_code == 200
        kill_after_publish(app, "predictor")  # its predictions are published, its offsets not committed
        app.pump()
        assert client.post("/v1/labels", content=json.dumps(labels(0, 250))).status_code == 200
        kill_after_publish(app, "label-joiner")  # `labeled` published, offsets not committed
        app.pump()

        labeled = read_all(app, LABELED)
        by_event: dict[str, set[bytes]] = {}
        for m in labeled:
            by_event.setdefault(app.codec.decode(LABELED, m.value)["event_id"], set()).add(m.value)
        assert len(by_event) == 250 and len(labeled) > 250  # the replay republished ...
        assert all(len(copies) == 1 for copies in by_event.values())  # ... byte-identical records
        published = len(read_all(app, PREDICTIONS))
        assert published > 400  # the predictor's replay republished predictions

        q = app.store.query
        assert q(f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'")[1] == [(250,)]
        drift = next(r for r in app.runners if r.service.name == "drift-detector").service.detector
        state = drift._versions[(MODEL, 1)]
        assert state.detector.n_seen == 250  # the concept detector's n equals the joined labels
        assert drift.skipped["labeled"] == len(labeled) - 250
        assert drift.skipped["predictions"] == published - 400
        psi = q(f"SELECT window_start, n FROM drift_metrics FINAL WHERE model = '{MODEL}' AND statistic = 'psi' "
                "AND feature = 'items' ORDER BY window_start")[1]
        assert psi == [(0, 100), (100, 100), (200, 100), (300, 100)]
        coverage = q(f"SELECT max(value) FROM drift_metrics FINAL WHERE model = '{MODEL}' "
                     "AND statistic = 'coverage'")[1][0][0]
        assert 0 < coverage <= 1.0
    finally:
        app.close()
