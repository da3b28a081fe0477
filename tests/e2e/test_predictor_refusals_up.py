"""A model that fails to load, and features no model can compute with, never stop the predictor.

As a user meets it: ``driftline up`` in a subprocess, the registry API and ingest over
real HTTP, a fan-fault model of our own (not the demo's data). Artifacts are tampered
with on disk under the registry's home, as an attacker or a bad disk would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline.contract import FeatureContract
from driftline.models import DEFAULT_RECIPE
from driftline.registry.client import RegistryClient
from driftline.testing.home_store import home_count
from driftline.training import train

from test_up import free_port, wait_for

BIN = Path(sys.executable).parent
MODEL = "fan-fault"
CONTRACT = FeatureContract(numeric=("rpm", "bearing_temp_c"), categorical=("line",))
TOKEN = "refusals-test-token"
EPOCH_MS = 1_767_225_600_000


def fan_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"rpm": rng.normal(1500, 200, n), "bearing_temp_c": rng.normal(55, 6, n),
                          "line": rng.choice(["a", "b"], n)})
    z = 0.01 * (frame["rpm"] - 1500) + 0.2 * (frame["bearing_temp_c"] - 55)
    return frame, np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "fault", "ok").astype(object)


def events(start: int, n: int, poison: dict[int, float] | None = None) -> list[dict]:
    frame, _ = fan_data(n, seed=1000 + start)
    out = []
    for i, (_, row) in zip(range(start, start + n), frame.iterrows()):
        rpm = (poison or {}).get(i, float(row["rpm"]))
        out.append({"model": MODEL, "event_id": f"fan-{i:06d}", "entity_id": f"fan-{i % 7}",
                    "event_time": EPOCH_MS + i, "numeric_features": {"rpm": rpm,
                                                                     "bearing_temp_c": float(row["bearing_temp_c"])},
                    "categorical_features": {"line": row["line"]}})
    return out


class Up:
    """``driftline up`` in a subprocess; ``restart`` stops it with SIGINT and starts it on the same home."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.start()

    def start(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen([str(BIN / "driftline"), "up", "--port", self.url.rsplit(":", 1)[1]],
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_for(self.healthy, 120, f"driftline up on {self.url} ({self.log})")

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-5000:]
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=120) == 0, self.log.read_text()[-5000:]

    def post_events(self, records: list[dict]) -> None:
        response = httpx.post(self.url + "/v1/events", json=records, timeout=60)
        assert response.status_code == 200 and response.json()["accepted"] == len(records), response.text[:2000]

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0


@pytest.fixture
def up_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({"DRIFTLINE_HOME": str(home), "DRIFTLINE_REGISTRY_TOKEN": TOKEN, "DRIFTLINE_PARTITIONS": "1",
                "DRIFTLINE_RETRAIN_MIN_ROWS": "1000000"})  # no retraining: only the models registered here
    monkeypatch.setenv("DRIFTLINE_HOME", str(home))  # home_count finds the running up's store endpoint
    for variable in [k for k in os.environ if k.startswith("DRIFTLINE_") and k != "DRIFTLINE_HOME"]:
        monkeypatch.delenv(variable)
    return env


PREDICTIONS = f"SELECT count() FROM predictions FINAL WHERE model = '{MODEL}' AND role = 'champion'"
DEAD = "SELECT count() FROM dead_letters FINAL WHERE service = 'predictor'"


def predictions_by(version: int) -> int:
    return home_count(PREDICTIONS + f" AND model_version = {version}")


def register(client: RegistryClient, seed: int) -> int:
    frame, y = fan_data(2000, seed)
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, y)
    return client.register(MODEL, trained.estimator, CONTRACT, actor="test", reason=f"seed {seed}",
                           recipe=DEFAULT_RECIPE, profile=trained.profile).version


def tamper(home: Path, client: RegistryClient, version: int) -> None:
    """Change one byte of the version's artifact on disk, so its sha256 no longer matches."""
    path = home / "registry" / "artifacts" / f"{client.get(MODEL, version).sha256}.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def refusals(client: RegistryClient) -> list[dict]:
    return [row for row in client.audit_log(MODEL) if row["action"] == "model_load_failed"]


def test_refused_champions_are_reported_and_never_stop_the_predictor(up_env, tmp_path):
    home = Path(up_env["DRIFTLINE_HOME"])
    up = Up(up_env, tmp_path / "up.log")
    client = RegistryClient(up.url, TOKEN)
    failures = {"service": "predictor", "model": MODEL, "alias": "champion"}

    # 1. The only champion is tampered with: its events are dead-lettered with the reason, up stays alive.
    v1 = register(client, seed=1)
    client.set_alias(MODEL, "champion", v1, actor="test", reason="first")
    tamper(home, client, v1)
    up.post_events(events(0, 100))
    wait_for(lambda: home_count(DEAD) == 100, 120, "100 dead letters")
    assert home_count(PREDICTIONS) == 0 and up.healthy()
    reasons = home_count(f"SELECT count() FROM dead_letters FINAL WHERE service = 'predictor' "
                    f"AND position(error, 'champion v{v1} refused: TamperedArtifact') > 0 "
                    f"AND position(error, 'sha256') > 0")
    assert reasons == 100
    assert [(r["version"], r["actor"]) for r in wait_for(lambda: refusals(client), 30, "the audit row")] == [
        (v1, "predictor")]
    assert up.metric("driftline_model_load_failures_total", **failures) == 1

    # 2. A good champion is picked up at its model event: the next events are scored.
    v2 = register(client, seed=2)
    client.set_alias(MODEL, "champion", v2, actor="test", reason="repaired")
    up.post_events(events(100, 100))
    wait_for(lambda: predictions_by(v2) == 100, 120, "100 predictions by the good champion")

    # 3. A tampered version promoted over a good champion: the good one keeps serving.
    v3 = register(client, seed=3)
    tamper(home, client, v3)
    client.set_alias(MODEL, "champion", v3, actor="test", reason="bad promotion")
    up.post_events(events(200, 100))
    wait_for(lambda: predictions_by(v2) == 200, 120, "the good champion to score the next 100")
    assert home_count(PREDICTIONS) == 200 and home_count(DEAD) == 100
    assert [r["version"] for r in wait_for(lambda: len(refusals(client)) == 2 and refusals(client), 30,
                                           "the second audit row")] == [v1, v3]
    assert up.metric("driftline_model_load_failures_total", **failures) == 2

    # 4. A restart (nothing good in memory) serves the alias's last version that loads, not nothing.
    up.stop()
    up.start()
    up.post_events(events(300, 100))
    wait_for(lambda: predictions_by(v2) == 300, 120, "the good champion to score after the restart")
    assert home_count(PREDICTIONS) == 300
    assert home_count(DEAD) == 100, query("SELECT topic, offset, error FROM dead_letters FINAL WHERE service = 'predictor' "
                                     "ORDER BY received_at DESC LIMIT 10")
    up.stop()


def test_poison_features_are_dead_lettered_alone_and_a_restart_changes_nothing(up_env, tmp_path):
    home = Path(up_env["DRIFTLINE_HOME"])
    up = Up(up_env, tmp_path / "up.log")
    client = RegistryClient(up.url, TOKEN)
    version = register(client, seed=1)
    client.set_alias(MODEL, "champion", version, actor="test", reason="first")

    # 1e308 is a finite JSON number: ingest accepts it, and float32 models would see infinity.
    up.post_events(events(0, 999, poison={500: 1e308}))
    wait_for(lambda: home_count(PREDICTIONS) == 998 and home_count(DEAD) == 1, 120, "998 predictions and 1 dead letter")
    up.stop()

    # inf cannot be sent as JSON: it is written straight onto the features topic (bypassing ingest),
    # framed like the features already there, while up is stopped.
    write_straight_to_features(home, events(999, 1, poison={999: float("inf")})[0])
    up.start()
    wait_for(lambda: home_count(DEAD) == 2, 120, "the second dead letter")
    assert home_count(PREDICTIONS) == 998
    errors = sorted(r[0] for r in query(f"SELECT error FROM dead_letters FINAL WHERE service = 'predictor'"))
    assert errors == ["feature 'rpm' is 1e+308: beyond float32's range (3.4e+38), which models compute in",
                      "feature 'rpm' is inf: not a finite number"]
    assert up.metric("driftline_dead_letters_total", service="predictor", reason="bad_features") == 1  # this run

    up.stop()
    up.start()  # a restart reads nothing twice and changes no count
    up.post_events(events(1000, 1))
    wait_for(lambda: home_count(PREDICTIONS) == 999, 120, "the next event scored")
    assert home_count(DEAD) == 2
    up.stop()


def query(sql: str) -> list[tuple]:
    from driftline.config import Settings
    from driftline.store import Store

    store = Store(Settings().resolved_store_dsn)
    try:
        return store.query(sql)[1]
    finally:
        store.close()


def write_straight_to_features(home: Path, event: dict) -> None:
    """Append ``event`` to the stopped up's features topic with the schema id its records carry."""
    import io
    import json

    from fastavro import parse_schema, schemaless_writer

    from driftline.bus.memory import MemoryBus
    from driftline.codec import schema_text
    from driftline.topics import FEATURES, RECORD_OF_TOPIC

    bus = MemoryBus(log_dir=home / "bus")
    bus.create_topics({FEATURES: 1})  # DRIFTLINE_PARTITIONS=1: the topic up created, reloaded from its log
    try:
        header = _first_record(bus, FEATURES)[:5]  # magic byte and the schema id up registered
        body = io.BytesIO()
        schemaless_writer(body, parse_schema(json.loads(schema_text(RECORD_OF_TOPIC[FEATURES]))), event)
        producer = bus.producer()
        producer.produce(FEATURES, header + body.getvalue(), key=event["entity_id"].encode())
        producer.flush()
    finally:
        bus.close()


def _first_record(bus, topic: str) -> bytes:
    consumer = bus.consumer("poison-writer-peek", [topic])
    try:
        (message,) = consumer.poll_batch(1, 1.0)
        return message.value
    finally:
        consumer.close()
