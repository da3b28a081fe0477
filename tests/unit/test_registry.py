import pytest
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry import InvalidModelName, RegistryError, TamperedArtifact

CONTRACT = FeatureContract(numeric=("x",))


def fitted(c=1.0):
    return LogisticRegression(C=c).fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"])


def test_register_alias_and_load_verified(registry):
    events = []
    registry.listeners.append(events.append)
    v1 = registry.register("m", fitted(), CONTRACT, actor="alice", reason="first", lineage={"rows": 4})
    registry.set_alias("m", "champion", v1.version, actor="alice", reason="go", no_monitoring=True)
    loaded = registry.load("m", "champion")
    assert loaded.meta.version == 1 and loaded.meta.lineage == {"rows": 4}
    assert loaded.estimator.predict([[3.0]]).tolist() == ["1"]
    assert [e["action"] for e in events] == ["registered", "alias_moved"]
    assert [a["action"] for a in registry.audit_log("m")] == ["registered", "alias_moved"]
    assert registry.artifacts.path(v1.sha256).name.startswith(v1.sha256)


def test_a_tampered_artifact_is_refused(registry):
    v1 = registry.register("m", fitted(), CONTRACT, actor="a")
    registry.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    path = registry.artifacts.path(v1.sha256)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifact, match="sha256"):
        registry.load("m", "champion")


def test_rollback_restores_the_previous_champion(registry):
    registry.register("m", fitted(1.0), CONTRACT, actor="a")
    registry.register("m", fitted(0.1), CONTRACT, actor="a")
    registry.set_alias("m", "champion", 1, actor="a", reason="first", no_monitoring=True)
    registry.set_alias("m", "champion", 2, actor="a", reason="better", no_monitoring=True)
    event = registry.rollback("m", actor="bob", reason="v2 misbehaves")
    assert registry.aliases("m")["champion"] == 1
    assert event["previous_version"] == 2 and event["actor"] == "bob"


def test_unknown_things_raise_clear_errors(registry):
    with pytest.raises(RegistryError, match="no version 3"):
        registry.get("m", 3)
    registry.register("m", fitted(), CONTRACT, actor="a")
    with pytest.raises(RegistryError, match="unknown alias"):
        registry.set_alias("m", "king", 1, actor="a", reason="")
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback("m", actor="a", reason="")


def test_a_decision_on_a_missing_version_writes_no_audit_row(registry):
    registry.register("m", fitted(), CONTRACT, actor="a")
    with pytest.raises(RegistryError, match="no version 2"):
        registry.record("m", 2, "rejected", actor="a", reason="r")
    with pytest.raises(RegistryError, match="no version"):
        registry.record("m", 2**64, "rejected", actor="a", reason="r")
    assert [a["action"] for a in registry.audit_log()] == ["registered"]


def test_model_names_are_bounded(registry):
    for name in ("", "-m", "m" * 129, "m/../x", "m\x00"):
        with pytest.raises(InvalidModelName):
            registry.register(name, fitted(), CONTRACT, actor="a")
    assert registry.models() == []
