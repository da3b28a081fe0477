"""The registry's outbox on a real broker: an alias move answers while Kafka is down, and its
model event lands on the ``models`` topic exactly once when the broker is back, even when the
registry was killed (kill -9) between its SQLite commit and the publish.

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


class RegistryProcess:
    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.port = infra.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(Path(sys.executable).with_name("driftline")), "serve", "registry", "--port", str(self.port)]
        if setpriv := shutil.which("setpriv"):
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self.popen = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
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


def model_events(bootstrap: str, schema_registry_url: str) -> list[dict]:
    """Every record on ``models`` up to its end, decoded by an outside reader."""
    from confluent_kafka import DeserializingConsumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    consumer = DeserializingConsumer({
        "bootstrap.servers": bootstrap, "group.id": f"outbox-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": schema_registry_url}))})
    try:
        partitions = consumer.list_topics(MODELS, timeout=30).topics[MODELS].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(MODELS, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(MODELS, p, 0) for p in partitions])
        events, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {MODELS} to its end {ends}"
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            events.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return events
    finally:
        consumer.close()


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
    registry = RegistryProcess(env, tmp_path / "registry.log")
    client = RegistryClient(registry.url, TOKEN)
    for c in (1.0, 0.1):
        estimator = LogisticRegression(C=c).fit([[600.0], [700.0], [900.0], [1000.0]], ["ok", "ok", "crack", "crack"])
        client.register(MODEL, estimator, CONTRACT, actor="test")
    client.set_alias(MODEL, "champion", 1, actor="test", reason="first", no_monitoring=True)
    wait_for(lambda: pending(home) == 0, 60, "the first events published")

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

    # 2. Committed, then the registry dies (kill -9) before it could publish: the restart publishes it.
    broker.stop()
    rolled = client.rollback(MODEL, actor="test", reason="roll back")
    assert rolled["action"] == "rolled_back" and pending(home) == 1
    registry.popen.send_signal(signal.SIGKILL)
    registry.popen.wait(30)
    broker.start()
    registry = RegistryProcess(env, tmp_path / "registry.log")
    wait_for(lambda: pending(home) == 0, 120, "the event left by the killed registry published")
    assert moves(model_events(broker.address, schema_registry_url)) == [
        ("alias_moved", 1), ("alias_moved", 2), ("rolled_back", 1)]
    assert RegistryClient(registry.url).aliases(MODEL) == {"champion": 1}
    registry.popen.send_signal(signal.SIGTERM)
    assert registry.popen.wait(60) == 0
