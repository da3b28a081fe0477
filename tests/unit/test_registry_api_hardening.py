"""Malformed input to the registry API answers 4xx, never 500, and writes nothing."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry.artifacts import dumps
from driftline.registry.client import RegistryClient
from driftline.services.registry.app import create_app

CONTRACT = FeatureContract(numeric=("x",))
TOKEN, READ_TOKEN = "write-token-not-a-secret", "read-token-not-a-secret"
WRITE = {"Authorization": f"Bearer {TOKEN}"}


def artifact_b64() -> str:
    return base64.b64encode(dumps(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"]))).decode()


@pytest.fixture
def http(registry):
    return TestClient(create_app(registry, TOKEN, read_token=READ_TOKEN, max_body_bytes=1 << 20),
                      raise_server_exceptions=False)


def new_version(**changes):
    return {"artifact_b64": artifact_b64(), "contract": CONTRACT.to_dict(), "actor": "alice", **changes}


@pytest.mark.parametrize("changes, says", [
    ({"artifact_b64": "not base64 at all!"}, "base64"),
    ({"artifact_b64": base64.b64encode(b"PK\x03\x04 not really a zip").decode()}, "not a skops artifact"),
    ({"artifact_b64": base64.b64encode(b'{"hello": "world"}').decode()}, "not a skops artifact"),
    ({"contract": {"numeric": ["x"], "surprise": 1}}, "surprise"),
    ({"contract": {"numeric": ["x"], "categorical": ["x"]}}, "both numeric and categorical"),
    ({"contract": {"numeric": "x"}}, "numeric"),
    ({"contract": {"numeric": [1, 2]}}, "numeric"),
    ({"contract": {"numeric": ["x"], "task": "astrology"}}, "task"),
    ({"contract": "numeric"}, "contract"),
    ({"actor": ""}, "actor"),
])
def test_a_malformed_registration_answers_422_and_registers_nothing(http, registry, changes, says):
    response = http.post("/v1/models/m/versions", json=new_version(**changes), headers=WRITE)
    assert response.status_code == 422, response.text
    assert says in response.text
    assert registry.versions("m") == [] and registry.audit_log() == []


@pytest.mark.parametrize("path", [
    "/v1/models/m/versions/99999999999999999999",
    "/v1/models/m/versions/9223372036854775808",
    "/v1/models/m/versions/0",
    "/v1/models/m/versions/-1",
    "/v1/models/m/versions/1.5",
    "/v1/models/m/versions/99999999999999999999/card",
    "/v1/models/m/versions/99999999999999999999/artifact",
    "/v1/models/m/aliases/king",
    "/v1/models/" + "m" * 129 + "/versions",
    "/v1/models/-m/versions",
    "/v1/models/m%00/versions",
    "/v1/audit?model=" + "m" * 200,
])
def test_bad_paths_answer_4xx(http, path):
    response = http.get(path, headers=WRITE)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


def test_the_largest_storable_version_is_a_plain_404(http):
    assert http.get("/v1/models/m/versions/9223372036854775807").status_code == 404


@pytest.mark.parametrize("method, path, body", [
    ("post", "/v1/models/m/versions/99999999999999999999/decisions", {"action": "rejected", "actor": "a", "reason": "r"}),
    ("put", "/v1/models/m/aliases/champion", {"version": 99999999999999999999, "actor": "a", "reason": "r"}),
    ("put", "/v1/models/m/aliases/king", {"version": 1, "actor": "a", "reason": "r"}),
    ("post", "/v1/models/m/rollback", {"actor": "a", "reason": "r", "alias": "king"}),
    ("post", "/v1/models/m/versions/1/decisions", {"action": "DROP TABLE", "actor": "a", "reason": "r"}),
])
def test_bad_writes_answer_422_and_write_no_audit_row(http, registry, method, path, body):
    registry.register_artifact("m", base64.b64decode(artifact_b64()), CONTRACT, actor="a")
    before = registry.audit_log()
    response = getattr(http, method)(path, json=body, headers=WRITE)
    assert response.status_code == 422, response.text
    assert registry.audit_log() == before


def test_a_decision_or_alias_move_on_a_missing_version_is_404_without_an_audit_row(http, registry):
    registry.register_artifact("m", base64.b64decode(artifact_b64()), CONTRACT, actor="a")
    before = registry.audit_log()
    decision = http.post("/v1/models/m/versions/7/decisions", json={"action": "rejected", "actor": "a", "reason": "r"},
                         headers=WRITE)
    move = http.put("/v1/models/m/aliases/champion", json={"version": 7, "actor": "a", "reason": "r"}, headers=WRITE)
    other = http.post("/v1/models/nope/versions/1/decisions", json={"action": "rejected", "actor": "a", "reason": "r"},
                      headers=WRITE)
    assert (decision.status_code, move.status_code, other.status_code) == (404, 404, 404)
    assert registry.audit_log() == before
    assert http.post("/v1/models/m/versions/1/decisions", json={"action": "rejected", "actor": "a", "reason": "r"},
                     headers=WRITE).status_code == 200
    assert [a["action"] for a in registry.audit_log()] == ["registered", "rejected"]


def test_an_oversized_body_answers_413(http, registry):
    big = {"artifact_b64": "A" * (2 << 20), "contract": CONTRACT.to_dict(), "actor": "a"}
    assert http.post("/v1/models/m/versions", json=big, headers=WRITE).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"artifact_b64": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}'

    chunked = http.post("/v1/models/m/versions", content=chunks(), headers={**WRITE, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert registry.versions("m") == []


def test_artifact_downloads_need_the_read_or_write_token(http, registry):
    registry.register_artifact("m", base64.b64decode(artifact_b64()), CONTRACT, actor="a")
    path = "/v1/models/m/versions/1/artifact"
    assert http.get(path).status_code == 401
    assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    assert http.get(path, headers=WRITE).status_code == 200
    assert http.get("/v1/models/m/versions/1").status_code == 200  # metadata stays open
    # the read token does not allow writes
    assert http.put("/v1/models/m/aliases/champion", json={"version": 1, "actor": "a", "reason": "r"},
                    headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 401


def test_the_client_sends_the_read_token_for_artifacts(http, registry):
    registry.register_artifact("m", base64.b64decode(artifact_b64()), CONTRACT, actor="a")
    registry.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    reader = RegistryClient("http://testserver", read_token=READ_TOKEN)
    reader._http = http  # TestClient is an httpx.Client bound to the app
    assert reader.load("m").estimator.predict([[3.0]]).tolist() == ["1"]
    anonymous = RegistryClient("http://testserver")
    anonymous._http = http
    with pytest.raises(Exception, match="401"):
        anonymous.load("m")


def test_without_a_read_token_downloads_stay_open(registry):
    http = TestClient(create_app(registry, TOKEN))
    registry.register_artifact("m", base64.b64decode(artifact_b64()), CONTRACT, actor="a")
    assert http.get("/v1/models/m/versions/1/artifact").status_code == 200
