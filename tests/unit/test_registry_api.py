"""The registry service over HTTP: token on writes, sha256 checked by the loading client."""

import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry import TamperedArtifact
from driftline.registry.client import RegistryClient
from driftline.services.registry.app import create_app

CONTRACT = FeatureContract(numeric=("x",))
TOKEN = "test-token-not-a-secret"


def fitted():
    return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"])


def client_for(registry, token):
    http = TestClient(create_app(registry, TOKEN))
    client = RegistryClient("http://testserver", token)
    client._http = http  # TestClient is an httpx.Client bound to the app
    if token:
        http.headers["Authorization"] = f"Bearer {token}"
    return client


def test_writes_without_the_token_get_401(registry):
    http = TestClient(create_app(registry, TOKEN))
    assert http.put("/v1/models/m/aliases/champion", json={"version": 1, "actor": "x", "reason": "y"}).status_code == 401
    assert http.post("/v1/models/m/rollback", json={"actor": "x", "reason": "y"},
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert TestClient(create_app(registry, None)).post(
        "/v1/models/m/rollback", json={"actor": "x", "reason": "y"}).status_code == 401
    assert registry.audit_log() == []


def test_register_promote_card_and_load_over_http(registry):
    client = client_for(registry, TOKEN)
    v1 = client.register("m", fitted(), CONTRACT, actor="alice", reason="first", metrics={"accuracy": 0.9},
                         lineage={"rows": 4})
    client.set_alias("m", "champion", v1.version, actor="alice", reason="go live", no_monitoring=True)
    loaded = client.load("m", "champion")
    assert loaded.meta.version == 1 and loaded.estimator.predict([[3.0]]).tolist() == ["1"]
    card = client._http.get("/v1/models/m/versions/1/card").text
    assert "accuracy" in card and "go live" in card and v1.sha256 in card
    assert [e["action"] for e in client.audit_log("m")] == ["registered", "alias_moved"]


def test_a_tampered_artifact_is_refused_by_the_http_client(registry):
    client = client_for(registry, TOKEN)
    v1 = client.register("m", fitted(), CONTRACT, actor="alice")
    client.set_alias("m", "champion", 1, actor="alice", reason="go", no_monitoring=True)
    path = registry.artifacts.path(v1.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifact):
        client.load("m", "champion")
