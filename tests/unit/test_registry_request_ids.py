"""Request ids in the registry (issue 11, item 2): on the audit row and the ModelEvent, through the library,
the HTTP API and the client over a real port; a registry made before the column existed still opens."""

from __future__ import annotations

import sqlite3

import httpx
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry import Registry
from driftline.registry.client import RegistryClient
from driftline.services.registry.app import create_app
from driftline.testing.served import ServedApp

TOKEN = "request-id-token"
LOOM = FeatureContract(numeric=("warp_tension_n",), classes=("flaw", "ok"))
PROFILE = {"format": 1, "features": [{"name": "warp_tension_n"}]}  # enough for the champion check


def fitted():
    return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["flaw", "flaw", "ok", "ok"])


def ids_of(registry: Registry) -> list[tuple[str, str | None, str | None]]:
    return [(row["action"], row["alias"], row["request_id"]) for row in registry.audit_log("loom")]


def event_ids(registry: Registry) -> list[tuple[str, str | None]]:
    return [(event["action"], event["request_id"]) for _, event in registry.pending_events(100)]


def test_the_library_keeps_the_request_id_on_the_audit_row_and_the_model_event(registry):
    registry.register("loom", fitted(), LOOM, actor="retrainer", profile=PROFILE, request_id="req-1")
    registry.set_alias("loom", "champion", 1, actor="retrainer", reason="wins", request_id="req-1")
    registry.record("loom", 1, "rejected", actor="retrainer", reason="loses", request_id="req-2")
    registry.set_alias("loom", "shadow", 1, actor="someone", reason="by hand")  # no request: None
    assert ids_of(registry) == [("registered", None, "req-1"), ("alias_moved", "champion", "req-1"),
                                ("rejected", None, "req-2"), ("alias_moved", "shadow", None)]
    assert event_ids(registry) == [("registered", "req-1"), ("alias_moved", "req-1"), ("rejected", "req-2"),
                                   ("alias_moved", None)]


def test_the_http_api_and_the_client_pass_the_request_id(registry):
    served = ServedApp(create_app(registry, TOKEN))
    client = RegistryClient(served.url, TOKEN)
    try:
        version = client.register("loom", fitted(), LOOM, actor="retrainer", profile=PROFILE, request_id="h-1")
        client.set_alias("loom", "challenger", version.version, actor="retrainer", reason="trained", request_id="h-1")
        moved = client.set_alias("loom", "champion", version.version, actor="retrainer", reason="wins",
                                 request_id="h-1")
        assert moved["request_id"] == "h-1"
        client.record("loom", version.version, "retrain_failed", actor="retrainer", reason="x", request_id="h-2")
        client.record("loom", version.version, "model_load_failed", actor="predictor", reason="y")
        assert [(r["action"], r["request_id"]) for r in client.audit_log("loom")] == [
            ("registered", "h-1"), ("alias_moved", "h-1"), ("alias_moved", "h-1"), ("retrain_failed", "h-2"),
            ("model_load_failed", None)]
        assert event_ids(registry)[-2:] == [("retrain_failed", "h-2"), ("model_load_failed", None)]
        # a request id is bounded text: anything else is refused before a row is written
        response = httpx.put(served.url + "/v1/models/loom/aliases/shadow",
                             json={"version": 1, "actor": "x", "reason": "y", "request_id": "r" * 300},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 422 and len(registry.audit_log("loom")) == 5
    finally:
        client.close()
        served.close()


def test_an_older_body_without_request_id_still_works(registry):
    http = TestClient(create_app(registry, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    registry.register("loom", fitted(), LOOM, actor="test", profile=PROFILE)
    answer = http.post("/v1/models/loom/versions/1/decisions", json={"action": "rejected", "actor": "a", "reason": "b"})
    assert answer.status_code == 200 and answer.json()["request_id"] is None


def test_a_registry_made_before_request_ids_opens_and_keeps_its_rows(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    db = sqlite3.connect(home / "registry.sqlite")
    # the audit table as driftline created it before issue 11, with a row in it
    db.executescript("""
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, model TEXT NOT NULL, version INTEGER, alias TEXT, previous_version INTEGER,
            reason TEXT NOT NULL);
        INSERT INTO audit (at, actor, action, model, version, alias, previous_version, reason)
            VALUES (1, 'retrainer', 'retrain_failed', 'loom', 1, NULL, NULL, 'request r0 failed: old');
    """)
    db.commit()
    db.close()
    for _ in range(2):  # opening twice migrates once
        registry = Registry(home)
        try:
            (old,) = registry.audit_log("loom")
            assert old["reason"] == "request r0 failed: old" and old["request_id"] is None
        finally:
            registry.close()
    registry = Registry(home)
    try:
        registry.register("loom", fitted(), LOOM, actor="retrainer", request_id="r1")
        assert [r["request_id"] for r in registry.audit_log("loom")] == [None, "r1"]
    finally:
        registry.close()
