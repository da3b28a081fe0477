"""The registry's outbox on a real broker: an alias move answers while Kafka is down, and its
model event lands on the ``models`` topic exactly once when the broker is back, even when the
registry was killed (kill -9) between its SQLite commit and the publish; a running
``driftline serve predictor`` then scores with the version the event names.

A broker of this module's own (it is stopped and started again), the session's Apicurio,
``driftline serve registry`` as a subprocess, and an outside reader of the topic
(confluent-kafka ``DeserializingConsumer`` + ``AvroDeserializer``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry.client import RegistryClient
from driftline.testing import kafka as infra
from driftline.topics import MODELS

TOKEN = "outbox-kafka-token"
MODEL = "kiln-crack"
CONTRACT = FeatureContract(numeric=("kiln_temp_c",))


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Broker:
    """A single-node Kafka this module may stop and start again on the same ports and data."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.service = infra.start_kafka(workdir, die_with_parent=True)
        self.address = self.service.address

    def stop(self) -> None:
        self.service.stop()

    def start(self) -> None:
        cmd = [*infra._kafka_jvm(infra.require_java(), infra.fetch_kafka(), self.workdir, infra.KAFKA_HEAP),
               "kafka.Kafka", str(self.workdir / "server.properties")]
        popen = infra._spawn("kafka", cmd, self.workdir, True)
        self.service = infra.Service(name="kafka", address=self.address, pid=popen.pid, workdir=self.workdir,
                                     log_path=self.workdir / "kafka.log", popen=popen, ports=self.service.ports)
        infra.wait_until(self.service, lambda: infra.kafka_ready(self.address, self.service.ports["broker"]), 180)


@pytest.fixture(scope="module")
def broker():
    workdir = Path(tempfile.mkdtemp(prefix="driftline-outbox-kafka-"))
    try:
        broker = Broker(workdir)
    except infra.InfraError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
            pytest.fail(f"cannot start kafka: {exc}")
        pytest.skip(f"cannot start kafka: {exc}")
    yield broker
    broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def serve(service: str, env: dict, log: Path, *args: str) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("driftline")), "serve", service, *args]
    if setpriv := shutil.which("setpriv"):  # dies with the test run, whatever happens to it
        cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


class RegistryProcess:
    def __init__(self, env: dict, log: Path, port: int):
        self.env, self.log, self.port = env, log, port
        self.url = f"http://127.0.0.1:{self.port}"
        self.popen = serve("registry", env, log, "--port", str(port))
        wait_for(self.healthy, 180, f"the registry on {self.url} ({log})")

    def healthy(self) -> bool:
        assert self.popen.poll() is None, self.log.read_text()[-5000:]
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def pending(home: Path) -> int:
    """Outbox rows not yet acknowledged by the broker, read from the registry's SQLite like an operator would."""
    with sqlite3.connect(home / "registry" / "registry.sqlite", timeout=10) as db:
        return db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]


def model_events(bootstrap: str, schema_registry_url: str, topic: str = MODELS) -> list[dict]:
    """Every record on ``topic`` up to its end, decoded by an outside reader."""
    from confluent_kafka import DeserializingConsumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    consumer = DeserializingConsumer({
        "bootstrap.servers": bootstrap, "group.id": f"outbox-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": schema_registry_url}))})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        events, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end {ends}"
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            events.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return events
    finally:
        consumer.close()


class Features:
    """Feature events written onto the features topic, as ingest would."""

    def __init__(self, bootstrap: str, schema_registry_url: str):
        from driftline.bus.kafka import KafkaBus
        from driftline.codec import Codec, registry_client

        self.producer = KafkaBus(bootstrap).producer()
        self.codec = Codec(registry_client(schema_registry_url))

    def send(self, event_id: str) -> None:
        from driftline.topics import FEATURES

        event = {"model": MODEL, "event_id": event_id, "entity_id": "kiln-1", "event_time": 1_767_225_600_000,
                 "numeric_features": {"kiln_temp_c": 800.0}, "categorical_features": {}}
        self.producer.produce(FEATURES, self.codec.encode(FEATURES, event), key=b"kiln-1")
        self.producer.flush()


def scored_by(bootstrap: str, schema_registry_url: str, event_id: str) -> list[int]:
    """The champion versions that scored ``event_id`` (read from the predictions topic)."""
    from driftline.topics import PREDICTIONS

    return [p["model_version"] for p in model_events(bootstrap, schema_registry_url, PREDICTIONS)
            if p["event_id"] == event_id and p["role"] == "champion"]


def swapped_to(version: int, features: Features, bootstrap: str, schema_registry_url: str, name: str,
               log: Path) -> None:
    """Send events until the predictor scores one with ``version``.

    The predictor reads model events and features on two consumers, so a feature sent right after
    the model event was published may still be scored by the version before: the swap applies from
    the predictor's next batch after it has read the event.
    """
    deadline = time.monotonic() + 180
    for attempt in range(10_000):
        assert time.monotonic() < deadline, f"no event scored by v{version}; predictor log:\n" + \
            log.read_text(errors="replace")[-5000:]
        event_id = f"{name}-{attempt}"
        features.send(event_id)
        scored = wait_for(lambda: scored_by(bootstrap, schema_registry_url, event_id), 120,
                          f"{event_id} scored; predictor log: {log}")
        if scored == [version]:
            return


def moves(events: list[dict]) -> list[tuple[str, int]]:
    return [(e["action"], e["version"]) for e in events if e["model"] == MODEL and e["alias"] == "champion"]


def test_an_alias_move_survives_a_broker_outage_and_a_kill_9_and_is_published_once(
        broker, schema_registry_url, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({"DRIFTLINE_HOME": str(home), "DRIFTLINE_KAFKA_BOOTSTRAP": broker.address,
                "DRIFTLINE_SCHEMA_REGISTRY_URL": schema_registry_url, "DRIFTLINE_REGISTRY_TOKEN": TOKEN,
                "DRIFTLINE_PARTITIONS": "1", "DRIFTLINE_REGISTRY_OUTBOX_TIMEOUT_S": "3",
                "DRIFTLINE_REGISTRY_OUTBOX_BACKOFF_MAX_S": "1"})
    port = infra.free_port()
    registry = RegistryProcess(env, tmp_path / "registry.log", port)
    client = RegistryClient(registry.url, TOKEN)
    for c in (1.0, 0.1):
        estimator = LogisticRegression(C=c).fit([[600.0], [700.0], [900.0], [1000.0]], ["ok", "ok", "crack", "crack"])
        client.register(MODEL, estimator, CONTRACT, actor="test")
    client.set_alias(MODEL, "champion", 1, actor="test", reason="first", no_monitoring=True)
    wait_for(lambda: pending(home) == 0, 60, "the first events published")
    predictor = serve("predictor", {**env, "DRIFTLINE_HOME": str(tmp_path / "predictor-home"),
                                    "DRIFTLINE_REGISTRY_URL": registry.url}, tmp_path / "predictor.log")
    features = Features(broker.address, schema_registry_url)
    features.send("before")
    wait_for(lambda: scored_by(broker.address, schema_registry_url, "before") == [1], 180,
             f"the predictor to score with v1 ({tmp_path / 'predictor.log'})")

    # 1. The broker is down: the promotion answers 200 at once, durable, its event waiting in the outbox.
    broker.stop()
    started = time.monotonic()
    moved = client.set_alias(MODEL, "champion", 2, actor="test", reason="promote", no_monitoring=True)
    answered_s = time.monotonic() - started
    assert moved["action"] == "alias_moved" and client.aliases(MODEL) == {"champion": 2}
    assert pending(home) == 1
    print(f"promotion answered in {answered_s:.3f}s with the broker down")
    broker.start()
    wait_for(lambda: pending(home) == 0, 120, "the promotion published once the broker is back")
    assert moves(model_events(broker.address, schema_registry_url)) == [("alias_moved", 1), ("alias_moved", 2)]
    predictor_log = tmp_path / "predictor.log"
    swapped_to(2, features, broker.address, schema_registry_url, "after-promotion", predictor_log)

    # 2. Committed, then the registry dies (kill -9) before it could publish: the restart publishes it.
    broker.stop()
    rolled = client.rollback(MODEL, actor="test", reason="roll back")
    assert rolled["action"] == "rolled_back" and pending(home) == 1
    registry.popen.send_signal(signal.SIGKILL)
    registry.popen.wait(30)
    broker.start()
    registry = RegistryProcess(env, tmp_path / "registry.log", port)
    wait_for(lambda: pending(home) == 0, 120, "the event left by the killed registry published")
    assert moves(model_events(broker.address, schema_registry_url)) == [
        ("alias_moved", 1), ("alias_moved", 2), ("rolled_back", 1)]
    assert RegistryClient(registry.url).aliases(MODEL) == {"champion": 1}
    swapped_to(1, features, broker.address, schema_registry_url, "after-rollback", predictor_log)
    assert predictor.poll() is None, predictor_log.read_text()[-5000:]
    for process in (predictor, registry.popen):
        process.send_signal(signal.SIGTERM)
    assert [process.wait(60) for process in (predictor, registry.popen)] == [0, 0]
