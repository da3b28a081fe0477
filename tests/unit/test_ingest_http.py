"""A batch of 10 events with 3 malformed: 7 accepted, 3 dead-lettered with reasons, the response names them."""

import json

from fastapi.testclient import TestClient

from driftline.entry.demo import feature_events, train_first_model
from driftline.entry.embedded import Embedded
from driftline.entry.scenario import CreditScenario
from driftline.services.ingest.app import create_app
from driftline.topics import DLQ, FEATURES


def drain(consumer):
    out = []
    while batch := consumer.poll_batch(100, 0.0):
        out.extend(batch)
    return out


def test_ten_events_three_malformed(settings):
    app = Embedded(settings)
    try:
        train_first_model(app, CreditScenario(), rows=2000)
        events = feature_events(CreditScenario().generate(0, 10))
        events[2]["numeric_features"]["income"] = "a lot"  # wrong type
        del events[5]["event_id"]  # missing field
        events[8]["numeric_features"]["shoe_size"] = 44.0  # not in the model's contract
        features = app.bus.consumer("probe", [FEATURES])
        dlq = app.bus.consumer("probe", [DLQ])

        response = TestClient(create_app(app.ingest)).post("/v1/events", content=json.dumps(events))

        assert response.status_code == 207
        body = response.json()
        assert body["accepted"] == 7
        assert body["accepted_indexes"] == [0, 1, 3, 4, 6, 7, 9] and body["already_accepted"] == []
        rejected = {r["index"]: r for r in body["rejected"]}
        assert sorted(rejected) == [2, 5, 8]
        assert {r["status"] for r in rejected.values()} == {422}
        assert rejected[2]["errors"][0]["field"] == "numeric_features.income"
        assert rejected[5]["errors"][0]["field"] == "event_id"
        assert rejected[8]["errors"][0]["field"] == "numeric_features.shoe_size"
        assert len(drain(features)) == 7
        assert len(drain(dlq)) == 3
        columns, rows = app.store.query("SELECT payload, error FROM dead_letters FINAL ORDER BY error")
        assert len(rows) == 3
        # Byte for byte what was sent for each record (json.dumps wrote the body).
        assert sorted(r[0] for r in rows) == sorted(json.dumps(events[i]) for i in (2, 5, 8))
        assert all(r[1] for r in rows)
    finally:
        app.close()


def test_a_body_that_is_not_json_is_kept_as_a_dead_letter(settings):
    app = Embedded(settings)
    try:
        response = TestClient(create_app(app.ingest)).post("/v1/labels", content=b"{nope")
        assert response.status_code == 400
        assert app.store.query("SELECT payload FROM dead_letters FINAL")[1] == [("{nope",)]
    finally:
        app.close()


def test_labels_accept_ints_and_reject_missing_event_ids(settings):
    from driftline.entry.scenario import CONTRACT

    app = Embedded(settings)
    app.ingest.ingest.contract_of = {"credit": CONTRACT}.get  # a known model (labels for unknown ones: 422)
    try:
        client = TestClient(create_app(app.ingest))
        ok = client.post("/v1/labels", json={"model": "credit", "event_id": "e1", "label": 1})
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        bad = client.post("/v1/labels", json=[{"model": "credit", "label": "1"}])
        assert bad.status_code == 422 and bad.json()["rejected"][0]["errors"][0]["field"] == "event_id"
    finally:
        app.close()
