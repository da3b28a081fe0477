"""The sandboxed load check a new version must pass before it is registered.

The misbehaving models are a user's own type, trusted by configuration, so the
type check lets them through and only the sandbox stands between their
``__setstate__`` and the machine.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from driftline.contract import FeatureContract
from driftline.registry import LoadProbe, Registry, UnloadableArtifact, UntrustedArtifact
from driftline.registry.artifacts import loads_verified, sha256_hex
from driftline.registry.sandbox import network_isolation_prefix

CLASSIFIER = FeatureContract(numeric=("x",))
REGRESSOR = FeatureContract(numeric=("x",), task="regression")
X, Y = [[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"]

# A user's module: each class misbehaves when skops restores its state.
USER_MODULE = textwrap.dedent('''
    import os, socket, subprocess

    class Model:
        """Predicts; restoring it first does ``self.attack()``."""
        def predict(self, X):
            return [0] * len(X)
        def predict_proba(self, X):
            return [[1.0, 0.0]] * len(X)
        def __getstate__(self):
            return dict(self.__dict__)
        def __setstate__(self, state):
            self.__dict__.update(state)
            self.attack()
        def attack(self):
            pass

    class WritesAFile(Model):
        def attack(self):
            with open(self.marker, "w") as f:
                f.write("ran")

    class OpensASocket(Model):
        def attack(self):
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            connection.settimeout(2)
            connection.connect(("127.0.0.1", self.port))
            connection.sendall(b"ran")

    class StartsAProcess(Model):
        def attack(self):
            subprocess.run(["sh", "-c", "echo ran > " + self.marker])

    class RunsOsSystem(Model):
        def attack(self):
            os.system("echo ran > " + self.marker)

    class Forks(Model):
        def attack(self):
            if os.fork() == 0:
                open(self.marker, "w").write("ran")
                os._exit(0)

    class Spins(Model):
        def attack(self):
            while True:
                pass

    class Hoards(Model):
        def attack(self):
            self.hoard = bytearray(64 << 30)
''')
# attack -> what the refusal says stopped it
ATTACKS = {
    "WritesAFile": "refuses to open .* for writing",
    "OpensASocket": "refuses 'socket.",
    "StartsAProcess": "refuses 'subprocess.Popen'",
    "RunsOsSystem": "refuses 'os.system'",
    "Forks": "refuses 'os.fork'",
    "Spins": "took longer than 3s",
    "Hoards": "MemoryError|killed",
}


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """The module importable here and (through PYTHONPATH) in the probe process."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "driftline_test_user_models.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), previous]))
    import driftline_test_user_models
    yield driftline_test_user_models
    sys.path.remove(str(folder))
    sys.modules.pop("driftline_test_user_models", None)
    if previous is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def probe(user_module):
    """A probe of its own (started after PYTHONPATH names the user module), with short limits."""
    p = LoadProbe(timeout_s=3.0, memory_bytes=512 << 20)
    yield p
    p.close()


@pytest.fixture
def registry(tmp_path, probe):
    trusted = [f"driftline_test_user_models.{name}" for name in ATTACKS]
    r = Registry(tmp_path / "registry", trusted_types=trusted, load_probe=probe)
    yield r
    r.close()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_trusted_type_that_misbehaves_on_load_is_refused(attack, registry, user_module, tmp_path):
    marker = tmp_path / "marker"
    listener = __import__("socket").create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    model = getattr(user_module, attack)()
    model.marker, model.port = str(marker), listener.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UnloadableArtifact, match=ATTACKS[attack]) as refused:
        registry.register("m", model, CLASSIFIER, actor="attacker")
    assert time.monotonic() - started < 30
    assert registry.versions("m") == [] and registry.audit_log() == []
    assert not marker.exists(), refused.value
    with pytest.raises(TimeoutError):  # nothing connected
        listener.accept()
    listener.close()


def test_the_probe_keeps_serving_after_refusals(registry):
    registry.register("m", LogisticRegression().fit(X, Y), CLASSIFIER, actor="a")
    assert [v.version for v in registry.versions("m")] == [1]


def test_a_classifier_contract_needs_predict_proba(registry):
    with pytest.raises(UnloadableArtifact, match="predict_proba"):
        registry.register("m", LinearRegression().fit(X, [0, 0, 1, 1]), CLASSIFIER, actor="a")
    registry.register("m", LinearRegression().fit(X, [0, 0, 1, 1]), REGRESSOR, actor="a")
    with pytest.raises(UnloadableArtifact, match="no predict"):
        registry.register("m", StandardScaler().fit(X), REGRESSOR, actor="a")
    assert [v.version for v in registry.versions("m")] == [1]


def test_a_function_is_refused_unless_configured_by_exact_name(tmp_path, probe):
    pipeline = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()).fit(X, Y)
    strict = Registry(tmp_path / "strict", load_probe=probe)
    with pytest.raises(UntrustedArtifact, match="numpy.log1p"):
        strict.register("m", pipeline, CLASSIFIER, actor="a")
    configured = Registry(tmp_path / "configured", trusted_types=["numpy.log1p"], load_probe=probe)
    configured.register("m", pipeline, CLASSIFIER, actor="a")
    assert configured.load("m", version=1).estimator.predict([[3.0]]).tolist() == ["1"]
    data = sio.dumps(pipeline)  # the loading side applies the same rule
    with pytest.raises(UntrustedArtifact, match="numpy.log1p"):
        loads_verified(data, sha256_hex(data), "m")
    loads_verified(data, sha256_hex(data), "m", frozenset({"numpy.log1p"}))

@pytest.mark.skipif(not network_isolation_prefix(), reason="unshare -rn is not permitted on this machine")
def test_the_probe_runs_in_its_own_network_namespace(probe):
    probe.check(sio.dumps(LogisticRegression().fit(X, Y)), "classification")  # started and warm
    assert os.readlink(f"/proc/{probe._process.pid}/ns/net") != os.readlink("/proc/self/ns/net")


def test_the_embedded_mode_trusts_the_configured_names(settings, monkeypatch):
    from driftline.config import Settings
    from driftline.entry.embedded import Embedded

    monkeypatch.setenv("DRIFTLINE_TRUSTED_TYPES", '["numpy.log1p"]')
    embedded = Embedded(Settings())
    try:
        pipeline = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()).fit(X, Y)
        embedded.registry.register("m", pipeline, CLASSIFIER, actor="a")
        assert embedded.registry.load("m", version=1).estimator.predict([[3.0]]).tolist() == ["1"]
    finally:
        embedded.close()
