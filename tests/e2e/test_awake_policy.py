"""A policy that stays awake, through the real loop in embedded mode (issue 11, item 2).

A gearbox model of our own (a random forest: its in-sample scores are far more
confident than its scores on new data) streams through predictor, label-joiner,
drift-detector, retrainer and registry:

1. a labelling glitch early on (labels flipped for 2,000 events) fires the concept
   detector; the challenger trained on it is rightly rejected;
2. later, a real change (the oil runs 15 degrees hotter, and faults follow load
   instead of heat) must still be retrained and promoted: the rejection re-armed the
   model instead of leaving it blind for the hour's cooldown;
3. after the promotion, 200,000 stationary events raise no further incident: the
   promoted version's reference profile comes from rows it did not train on.

One run (a module fixture) serves both tests. The 200,000 events of step 3 go to
the same drift-detector, with its state from the run, in large batches of records
scored by the promoted version itself: the Avro round trips of the bus would make
them minutes instead of seconds, and they are not what is being tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.bus import Message
from driftline.config import Settings
from driftline.entry.embedded import Embedded
from driftline.models import monitored_score
from driftline.runner import Incoming
from driftline.timeutil import to_ms
from driftline.topics import LABELED, PREDICTIONS, RETRAIN

from gearbox_stream import EPOCH_MS, MODEL, SPACING_MS, WINDOW_MS, GearboxRun, Phase, gearbox, register_champion, \
    stream

GLITCH = (3000, 5000)  # labels flipped
CHANGE_AT = 14_400  # a window boundary (1,440 s)
PHASES = [Phase(GLITCH[0]), Phase(GLITCH[1] - GLITCH[0], flipped=True), Phase(CHANGE_AT - GLITCH[1]),
          Phase(7_000, hot=True)]
FOREST = {"estimator": "random_forest", "params": {"n_estimators": 40, "random_state": 0, "n_jobs": 1}}
STATIONARY = 200_000

README = Path(__file__).resolve().parents[2] / "README.md"


def incident_sql(incident_id: str) -> str:
    """The README's query that shows one incident end to end, for ``incident_id``."""
    text = README.read_text()
    start = text.index("-- one incident, end to end")
    return text[start:text.index("```", start)].replace("'INCIDENT'", f"'{incident_id}'")


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_HOME", str(tmp_path_factory.mktemp("awake") / "home"))
        app = Embedded(Settings(partitions=1, drift_window_size=WINDOW_MS))
        try:
            register_champion(app, rows=3000, recipe=FOREST)
            run = GearboxRun(app, label_delay=2000)
            run.feed(stream(PHASES))
            yield app, run
        finally:
            app.close()


def answers(app: Embedded, request_id: str) -> list[tuple]:
    _, rows = app.store.query("SELECT action, alias, version FROM audit FINAL WHERE request_id = {r:String} "
                              "ORDER BY occurred_at", {"r": request_id})
    return rows


def test_a_rejected_false_alarm_does_not_blind_the_loop_to_a_real_change(loop):
    app, run = loop
    at = {r["request_id"]: (to_ms(r["requested_at"]) - EPOCH_MS) // SPACING_MS for r in run.requests}
    false_alarm = run.requests[0]
    assert false_alarm["reason"] == "concept_drift" and GLITCH[0] <= at[false_alarm["request_id"]] < GLITCH[1]
    assert ("rejected", "", 2) in answers(app, false_alarm["request_id"])

    after = [r for r in run.requests if at[r["request_id"]] >= CHANGE_AT]
    assert after, f"no request after the change; requests: {[(r['reason'], at[r['request_id']]) for r in run.requests]}"
    real = after[0]
    assert at[real["request_id"]] < CHANGE_AT + 2 * WINDOW_MS // SPACING_MS  # within two windows of the change
    promoted = [row for row in answers(app, real["request_id"]) if row[:2] == ("alias_moved", "champion")]
    assert promoted, answers(app, real["request_id"])
    champion = promoted[0][2]
    assert app.registry.aliases(MODEL)["champion"] == champion

    # The promoted version serves the changed regime well; v1 did not.
    _, quality = app.store.query(
        "SELECT model_version, 1 - avg(error) FROM labels FINAL WHERE model = {m:String} AND status = 'joined' "
        "AND toUnixTimestamp64Milli(event_time) >= {t:Int64} GROUP BY model_version",
        {"m": MODEL, "t": EPOCH_MS + CHANGE_AT * SPACING_MS})
    accuracy = dict(quality)
    assert accuracy[1] < 0.65 and accuracy[champion] > 0.8, accuracy

    # One query shows the incident: drifted windows, its requests, the promotion.
    _, rows = app.store.query(incident_sql(real["incident_id"]))
    steps = [row[1] for row in rows]
    assert steps[0] == "drift" and "request" in steps and steps[-1] == "audit"
    assert any(row[1] == "audit" and row[2] == f"alias_moved champion v{champion}" for row in rows)
    assert any(row[1] == "request" and row[3].startswith("promoted") for row in rows)


def test_after_the_promotion_a_stationary_continuation_raises_no_incident(loop):
    app, run = loop
    champion = app.registry.aliases(MODEL)["champion"]
    assert champion > 1, "the loop promoted nothing"
    promoted_at = max(e["streamed"] for e in run.promotions())
    service = next(r.service for r in app.runners if r.service.name == "drift-detector")
    loaded = app.registry.load(MODEL, version=champion)

    rng = np.random.default_rng(99)
    start = len(stream(PHASES))
    batch = 20_000
    requests, psi_max, concept = [], 0.0, 0
    for first in range(start, start + STATIONARY, batch):
        frame = gearbox(batch, rng, hot=True)
        features = frame.drop(columns="status")
        probabilities = loaded.estimator.predict_proba(features)
        score = monitored_score(probabilities)  # as the predictor publishes it
        predicted = np.asarray(loaded.estimator.classes_, dtype=object)[probabilities.argmax(1)]
        error = (predicted != frame["status"].to_numpy(dtype=object)).astype(float)
        incoming = _records(features, score, predicted, frame["status"], error, first, champion)
        out = service.handle(incoming, now_ms=EPOCH_MS + first * SPACING_MS)
        requests += [record for topic, _, record in out.records if topic == RETRAIN]
        mine = [r for r in out.rows.get("drift_metrics", []) if r["model_version"] == champion]
        psi_max = max([psi_max] + [r["value"] for r in mine if r["statistic"] == "psi"])
        concept += sum(r["kind"] == "concept" for r in mine)
    print(f"\n{STATIONARY:,} stationary events after v{champion}'s promotion (at event {promoted_at:,}): "
          f"largest PSI {psi_max:.3f}, {concept} concept detections, {len(requests)} retrain requests")
    assert requests == []
    assert psi_max < 0.25
    assert not service.detector.policy.status(MODEL, champion)["in_incident"]


def _records(features: pd.DataFrame, score, predicted, labels, error, first: int, version: int) -> list[Incoming]:
    """Prediction and LabeledPrediction records of one batch, as the predictor and label-joiner publish them."""
    out = []
    numeric = features[["oil_temp_c", "vibration_mm_s", "load_fraction"]].to_dict("records")
    rows = zip(range(first, first + len(features)), numeric, features["site"].tolist(), score.tolist(),
               predicted.tolist(), labels.tolist(), error.tolist())
    for index, numbers, site, p, guess, label, e in rows:
        event_id = f"gbx-{index:08d}"
        t = EPOCH_MS + index * SPACING_MS
        prediction = {"prediction_id": f"{event_id}:{version}:champion", "event_id": event_id, "entity_id": event_id,
                      "model": MODEL, "model_version": version, "role": "champion", "score": p, "scores": {},
                      "predicted_label": guess, "numeric_features": numbers, "categorical_features": {"site": site},
                      "event_time": t, "prediction_time": t}
        # One partition, as the embedded bus of this test has: the watermark and the concept
        # detections' positions come from the messages.
        out.append(Incoming(PREDICTIONS, prediction, Message(PREDICTIONS, 0, index, None, b"", t)))
        out.append(Incoming(LABELED, {**prediction, "label": label, "value": None, "error": e,
                                      "label_time": t + 60_000}, Message(LABELED, 0, index, None, b"", t + 60_000)))
    return out
