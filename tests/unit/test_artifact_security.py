"""Malicious model artifacts: refused at registration and at load, and nothing they carry runs.

Each payload is a real skops file (a fitted LogisticRegression) whose schema was
edited to hold one node that, if built, runs code: most write a marker file in
``tmp_path``. ``test_the_payloads_are_live`` proves they would run if trusted;
every other test asserts the refusal names the type and the marker is absent.
The HTTP paths go through a real uvicorn server on a free loopback port.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry import Registry, UntrustedArtifact
from driftline.registry.artifacts import sha256_hex
from driftline.registry.client import RegistryClient
from driftline.services.registry.app import create_app
from driftline.testing.served import ServedApp

CONTRACT = FeatureContract(numeric=("x",))
TOKEN = "test-token-not-a-secret"


# -- forging ----------------------------------------------------------------------------------


def value_node(value):
    """A skops node for a plain value (JSON scalars, tuples, dicts) or an already built node."""
    if isinstance(value, dict) and "__loader__" in value:
        return value
    if isinstance(value, tuple):
        return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                "content": [value_node(v) for v in value]}
    if isinstance(value, dict):
        return {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                "content": {k: value_node(v) for k, v in value.items()}, "key_types": value_node(tuple(["str"] * len(value)))}
    return {"__class__": type(value).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


def call_node(module: str, name: str, *args) -> dict:
    """skops' reduce-style node: ``module.name(*args)`` is called when the tree is built."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": value_node(tuple(args))}


def real_artifact() -> bytes:
    return sio.dumps(LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"]))


def forge(payload: dict, files: dict[str, bytes] | None = None) -> bytes:
    """The real artifact with ``payload`` in place of the estimator's ``verbose`` attribute."""
    source = zipfile.ZipFile(io.BytesIO(real_artifact()))
    schema = json.loads(source.read("schema.json"))
    schema["content"]["content"]["verbose"] = payload
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, json.dumps(schema) if name == "schema.json" else source.read(name))
        for name, data in (files or {}).items():
            target.writestr(name, data)
    return out.getvalue()


class RunsShell:
    """Pickles to ``os.system(command)``: what a pickle-protocol reduce of a callable does on load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def payloads(marker: Path) -> dict[str, tuple[str, bytes, bool]]:
    """case -> (type name the refusal must name, artifact, whether building it writes ``marker``)."""
    write = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')"
    shell = f"echo ran > {marker}"
    pickled = __import__("pickle").dumps(RunsShell(shell))
    npy = io.BytesIO()
    np.save(npy, np.array([RunsShell(shell)], dtype=object), allow_pickle=True)
    return {
        "eval": ("builtins.eval", forge(call_node("builtins", "eval", f"exec({write!r})")), True),
        "exec": ("builtins.exec", forge(call_node("builtins", "exec", write)), True),
        "getattr": ("builtins.getattr", forge(call_node(
            "builtins", "getattr", call_node("builtins", "__import__", "os"), "system")), False),
        "__import__": ("builtins.__import__", forge(call_node("builtins", "__import__", "os")), False),
        "os.system": ("os.system", forge(call_node("os", "system", shell)), True),
        "posix.system": ("posix.system", forge(call_node("posix", "system", shell)), True),
        "subprocess.Popen": ("subprocess.Popen", forge(call_node(
            "subprocess", "Popen", ("sh", "-c", shell))), True),
        "operator.methodcaller": ("operator.methodcaller", forge({
            "__class__": "methodcaller", "__module__": "operator", "__loader__": "OperatorFuncNode",
            "attrs": value_node(("system", shell))}), False),
        "functools.partial": ("functools.partial", forge({
            "__class__": "partial", "__module__": "functools", "__loader__": "PartialNode",
            "content": {"func": {"__class__": "system", "__module__": "posix", "__loader__": "FunctionNode"},
                        "args": value_node((shell,)), "kwds": value_node({}), "namespace": value_node(None)}}), False),
        # skops' ReduceNode: LossNode takes its constructor from the file, so it reduces any callable.
        "reduce-node exec": ("builtins.exec", forge({
            "__class__": "exec", "__module__": "builtins", "__loader__": "LossNode",
            "__reduce__": {"args": value_node((write,))}, "content": value_node({})}), True),
        # pickle protocol: a reduce of os.system, unpickled by pickle.loads from a bytes node
        "pickle.loads reduce": ("pickle.loads", forge(call_node("pickle", "loads", {
            "__class__": "bytes", "__module__": "builtins", "__loader__": "BytesNode", "file": "evil.bin"}),
            {"evil.bin": pickled}), True),
        # The old "numpy." prefix let this one through: numpy's test helper exec()s a string.
        "numpy runstring": ("numpy.testing._private.utils.runstring", forge(call_node(
            "numpy.testing._private.utils", "runstring", write, {})), True),
        # An ndarray node (a trusted type) whose .npy holds a pickled object array reducing os.system:
        # the type check passes, numpy refuses the pickle (allow_pickle=False), so it does not load.
        "ndarray of pickles": ("allow_pickle", forge({
            "__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy",
            "file": "evil.npy"}, {"evil.npy": npy.getvalue()}), False),
    }


CASES = sorted(payloads(Path("/unused")))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def live_registry(registry):
    """The registry API served by uvicorn on a free 127.0.0.1 port; yields its URL."""
    served = ServedApp(create_app(registry, TOKEN))
    yield served.url
    served.close()


def plant(registry: Registry, artifact: bytes) -> None:
    """Put ``artifact`` in the store and forge version 1 + champion rows for it, as an attacker with disk access."""
    sha = registry.artifacts.put(artifact)
    with sqlite3.connect(registry.home / "registry.sqlite") as db:
        db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   ("m", 1, sha, 0, "attacker", json.dumps(CONTRACT.to_dict()), "{}", "{}", "{}", "{}", "{}"))
        db.execute("INSERT INTO aliases VALUES (?,?,?,?)", ("m", "champion", 1, 0))
    assert sha == sha256_hex(artifact)


# -- the payloads are real --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["eval", "exec", "os.system", "subprocess.Popen", "pickle.loads reduce",
                                  "numpy runstring", "reduce-node exec"])
def test_the_payloads_are_live(case, marker):
    """Trusted by skops, the payload runs on load: so an absent marker elsewhere means a refusal worked."""
    name, artifact, _ = payloads(marker)[case]
    result = sio.loads(artifact, trusted=sio.get_untrusted_types(data=artifact))
    if case == "subprocess.Popen":
        result.verbose.wait(timeout=30)
    assert marker.read_text().strip() == "ran"


# -- refused at registration ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_refused_by_register_artifact(case, registry, marker):
    name, artifact, _ = payloads(marker)[case]
    with pytest.raises(UntrustedArtifact, match="refusing") as refused:
        registry.register_artifact("m", artifact, CONTRACT, actor="attacker")
    assert name in str(refused.value)
    assert registry.versions("m") == [] and registry.audit_log() == []
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_refused_over_http_with_422_naming_the_type(case, registry, live_registry, marker):
    name, artifact, _ = payloads(marker)[case]
    body = {"artifact_b64": base64.b64encode(artifact).decode(), "contract": CONTRACT.to_dict(), "actor": "attacker"}
    response = httpx.post(f"{live_registry}/v1/models/m/versions", json=body,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 422, response.text
    assert name in response.json()["detail"]
    assert registry.versions("m") == [] and not marker.exists()


def test_the_unforged_artifact_is_accepted_on_the_same_paths(registry, live_registry):
    body = {"artifact_b64": base64.b64encode(real_artifact()).decode(), "contract": CONTRACT.to_dict(), "actor": "a"}
    response = httpx.post(f"{live_registry}/v1/models/m/versions", json=body,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 201, response.text
    registry.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    assert RegistryClient(live_registry).load("m").estimator.predict([[3.0]]).tolist() == ["1"]


# -- refused at load, when planted behind the registry's back ---------------------------------


@pytest.mark.parametrize("case", CASES)
def test_a_planted_artifact_is_refused_by_registry_load(case, registry, marker):
    name, artifact, _ = payloads(marker)[case]
    plant(registry, artifact)
    with pytest.raises(UntrustedArtifact, match="refusing") as refused:
        registry.load("m", "champion")
    assert name in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_a_planted_artifact_is_refused_by_the_http_client(case, registry, live_registry, marker):
    name, artifact, _ = payloads(marker)[case]
    plant(registry, artifact)
    client = RegistryClient(live_registry, TOKEN)
    try:
        with pytest.raises(UntrustedArtifact, match="refusing") as refused:
            client.load("m", "champion")
    finally:
        client.close()
    assert name in str(refused.value)
    assert not marker.exists()


def test_configuration_cannot_readmit_a_dangerous_name(tmp_path):
    for name in ("builtins.eval", "os.system", "operator.methodcaller", "numpy.load", "posix.system"):
        with pytest.raises(ValueError, match="never"):
            Registry(tmp_path / "r", trusted_types=[name])
        with pytest.raises(ValueError, match="never"):
            RegistryClient("http://127.0.0.1:9", trusted_types=[name])
    with pytest.raises(ValueError, match="exact names"):
        Registry(tmp_path / "r", trusted_types=["numpy.*"])
