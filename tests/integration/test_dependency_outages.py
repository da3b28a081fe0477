"""A runner service waits out its dependencies: ``driftline serve label-joiner`` over a real broker.

- Started while the store endpoint is down, it neither exits nor consumes: it logs what
  it waits for, its metrics say ``driftline_service_healthy 0``, and SIGTERM during the
  wait exits 0. Once ``driftline store serve`` starts, it becomes healthy and joins what
  was waiting on the topics.
- With the schema registry unreachable (a TCP proxy in front of Apicurio refuses
  connections, so Apicurio keeps its schemas), records with a schema id it has not seen
  yet are not dead-lettered: it waits, unhealthy, and joins them when the registry answers.

The data is not the demo's: predictions and labels of a made-up parcel-delay model,
written straight to the topics as Avro (as any producer could).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_writer
from prometheus_client.parser import text_string_to_metric_families

from driftline.bus.kafka import KafkaBus
from driftline.codec import Codec, registry_client, schema_text
from driftline.store import Store
from driftline.store.credentials import load_or_create_credentials
from driftline.testing.kafka import free_port
from driftline.topics import ALL_TOPICS, LABELS, PREDICTIONS

REPO = Path(__file__).resolve().parents[2]
RUN = uuid.uuid4().hex[:8]
MODEL = f"parcel-delay-{RUN}"
T0 = 1_767_225_600_000
TIMEOUT_S = 120.0


class Process:
    """``python -m driftline.entry.cli ARGS`` with its output in ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        cmd = [sys.executable, "-m", "driftline.entry.cli", *args]
        if setpriv := shutil.which("setpriv"):  # dies with the test run, whatever happens to it
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                return None
        return self.popen.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class RegistryProxy:
    """A TCP forwarder in front of the schema registry that can refuse connections (``down``)."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        try:  # wakes the thread blocked in accept(): a bare close() would leave the port listening
            server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def wait_until(what: str, condition: Callable[[], object], alive: Process | None = None,
               timeout_s: float = TIMEOUT_S) -> object:
    deadline, delay = time.monotonic() + timeout_s, 0.05
    while True:
        if alive is not None and not alive.alive():
            pytest.fail(f"the service exited while waiting for {what}\n{alive.text()[-4000:]}")
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached after {timeout_s:.0f}s\n{alive.text()[-4000:] if alive else ''}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def healthy(metrics_port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "driftline_service_healthy" and sample.labels.get("service") == "label-joiner":
                return sample.value
    return None


def prediction(i: int) -> dict:
    return {"prediction_id": f"{RUN}-{i}:1:champion", "event_id": f"{RUN}-{i}", "entity_id": f"depot-{i % 5}",
            "model": MODEL, "model_version": 1, "role": "champion", "score": 0.25 + (i % 50) / 100, "scores": {},
            "predicted_label": "late" if i % 3 else "on_time", "numeric_features": {"distance_km": float(i % 40)},
            "categorical_features": {"carrier": "owl"}, "event_time": T0 + i * 10, "prediction_time": T0 + i * 10 + 1}


def label(i: int) -> dict:
    return {"model": MODEL, "event_id": f"{RUN}-{i}", "label": "late" if i % 2 else "on_time", "value": None,
            "label_time": T0 + i * 10 + 500}


@pytest.fixture
def deployment(tmp_path: Path, kafka_bootstrap: str, schema_registry_url: str):
    """The environment of one deployment, its groups starting where the topics end now."""
    home = tmp_path / "home"
    home.mkdir()
    load_or_create_credentials(home / "store-credentials.json")  # what `driftline store serve` will use
    existing = set(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics)
    KafkaBus(kafka_bootstrap).create_topics({t: 3 for t in ALL_TOPICS})
    old = [t for t in (PREDICTIONS, LABELS) if t in existing]  # a topic created just now is empty
    if old:  # earlier modules' records on a shared broker are not this test's to join
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "driftline-label-joiner"})
        try:
            ends = [TopicPartition(t, p, consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1])
                    for t in old for p in range(3)]
            consumer.commit(offsets=ends, asynchronous=False)
        finally:
            consumer.close()
    host, _, rest = schema_registry_url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    proxy = RegistryProxy((host, int(port)))
    proxy.up()
    store_port, metrics_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
           "PYTHONUNBUFFERED": "1", "DRIFTLINE_HOME": str(home), "DRIFTLINE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "DRIFTLINE_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{proxy.port}/{path}",
           "DRIFTLINE_STORE_DSN": f"http://127.0.0.1:{store_port}",
           "DRIFTLINE_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",  # the label-joiner never asks it
           "DRIFTLINE_PARTITIONS": "3", "DRIFTLINE_METRICS_PORT": str(metrics_port),
           "DRIFTLINE_RETRY_BACKOFF_INITIAL_S": "0.2", "DRIFTLINE_RETRY_BACKOFF_MAX_S": "1.0"}
    procs: list[Process] = []

    def start(*args: str, log: str) -> Process:
        proc = Process(list(args), env, tmp_path / f"{log}.log")
        procs.append(proc)
        return proc

    yield {"env": env, "start": start, "proxy": proxy, "store_port": store_port, "metrics_port": metrics_port,
           "home": home, "tmp": tmp_path, "codec": Codec(registry_client(schema_registry_url)),
           "registry_url": schema_registry_url}
    for proc in reversed(procs):
        proc.stop()


def produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "consistent", "enable.idempotence": True})
    for topic, key, value in records:
        producer.produce(topic, value=value, key=key.encode())
    assert producer.flush(30) == 0


def test_the_label_joiner_waits_for_the_store_and_the_schema_registry(deployment, kafka_bootstrap) -> None:
    d = deployment
    store_dsn, metrics = d["env"]["DRIFTLINE_STORE_DSN"], d["metrics_port"]

    # 1. Store down at start: alive, unhealthy, and SIGTERM during the wait exits 0.
    first = d["start"]("serve", "label-joiner", log="label-joiner-1")
    wait_until("healthy 0 on the metrics port while the store is down", lambda: healthy(metrics) == 0, first)
    wait_until("the log naming the store", lambda: "unhealthy: the store" in first.text(), first)
    assert first.stop(timeout_s=15) == 0, first.text()[-3000:]

    # 2. Started again, still without a store; records arrive meanwhile.
    joiner = d["start"]("serve", "label-joiner", log="label-joiner-2")
    wait_until("healthy 0 again", lambda: healthy(metrics) == 0, joiner)
    codec: Codec = d["codec"]
    first_batch = range(0, 300)
    produce(kafka_bootstrap, [(PREDICTIONS, f"{RUN}-{i}", codec.encode(PREDICTIONS, prediction(i))) for i in first_batch]
            + [(LABELS, f"{RUN}-{i}", codec.encode(LABELS, label(i))) for i in first_batch])
    assert joiner.alive()

    store_proc = d["start"]("store", "serve", "--path", str(d["tmp"] / "store"), "--port", str(d["store_port"]),
                            log="store")
    wait_until("the store endpoint up", lambda: _ping(d["store_port"]), store_proc)
    store = Store(store_dsn, credentials_file=d["home"] / "store-credentials.json")
    store.migrate()  # idempotent: the joiner migrates too, whichever comes first
    try:
        joined = lambda: store.scalar("SELECT count() FROM labels FINAL WHERE model = {m:String} "  # noqa: E731
                                      "AND status = 'joined'", {"m": MODEL})
        dead = lambda: store.scalar("SELECT count() FROM dead_letters FINAL WHERE service = 'label-joiner'")  # noqa: E731
        wait_until("what waited joined once the store is up", lambda: joined() == 300, joiner)
        wait_until("healthy 1", lambda: healthy(metrics) == 1, joiner)
        assert "healthy again" in joiner.text()

        # 3. The schema registry unreachable while labels with a schema id new to the joiner arrive.
        variant = json.loads(schema_text("Label"))  # a compatible new version: one optional field more
        variant["fields"].append({"name": f"courier_{RUN}", "type": ["null", "string"], "default": None})
        new_id = codec.registry.register_schema("labels-value", Schema(json.dumps(variant), "AVRO"))
        assert new_id != int.from_bytes(codec.encode(LABELS, label(0))[1:5], "big"), "not a new schema id"
        parsed = parse_schema(variant)

        def as_new_version(record: dict) -> bytes:
            body = io.BytesIO()
            schemaless_writer(body, parsed, record)
            return b"\x00" + new_id.to_bytes(4, "big") + body.getvalue()

        d["proxy"].down()
        second_batch = range(300, 500)
        produce(kafka_bootstrap, [(PREDICTIONS, f"{RUN}-{i}", codec.encode(PREDICTIONS, prediction(i)))
                                  for i in second_batch]
                + [(LABELS, f"{RUN}-{i}", as_new_version({**label(i), f"courier_{RUN}": "owl"})) for i in second_batch])
        wait_until("healthy 0 while the registry is unreachable", lambda: healthy(metrics) == 0, joiner)
        assert "unhealthy: the schema registry" in joiner.text()
        assert joined() < 500 and dead() == 0  # waiting, not dead-lettering
        d["proxy"].up()
        wait_until("the labels that waited joined", lambda: joined() == 500, joiner)
        wait_until("healthy 1 again", lambda: healthy(metrics) == 1, joiner)
        assert dead() == 0  # not one good record dead-lettered
    finally:
        store.close()
    assert joiner.stop() == 0


def _ping(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
