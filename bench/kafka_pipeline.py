"""Distributed pipeline over a real broker vs raw confluent-kafka on the same broker; and latency.

Starts its own Kafka broker and Apicurio registry (``driftline.testing.kafka``, as
the test fixtures do), the store endpoint, and the registry, predictor and
label-joiner services, each its own process (``driftline serve``).

* Throughput: ``BENCH_KAFKA_EVENTS`` feature events, encoded as Avro by our Codec,
  produced straight to the ``features`` topic (what any Avro producer does, without
  ingest's HTTP hop); timed from the first produce until the label-joiner has
  logged every champion prediction in the store. The baseline is raw
  confluent-kafka on the same broker: the same encoded records produced
  (idempotent, acks=all) to a fresh 3-partition topic and consumed back in
  batches. ``ratio`` is the pipeline's share of that transport speed.
* Latency: events offered at a fixed rate (``BENCH_KAFKA_RATE`` events/s for
  ``BENCH_KAFKA_SECONDS``); for each, prediction_time (stamped by the predictor)
  minus the moment it was produced, read back from the ``predictions`` topic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import report
from driftline.bus.kafka import KafkaBus, KafkaProducer
from driftline.codec import Codec, registry_client
from driftline.entry.demo import TRAINING_OFFSET, feature_events
from driftline.models import DEFAULT_RECIPE
from driftline.registry.client import RegistryClient
from driftline.entry.scenario import CONTRACT, MODEL, CreditScenario
from driftline.store import Store
from driftline.testing.kafka import free_port, start_apicurio, start_kafka
from driftline.timeutil import to_ms
from driftline.topics import FEATURES, PREDICTIONS
from driftline.training import train

EVENTS = int(os.environ.get("BENCH_KAFKA_EVENTS", "50000"))
RATE = int(os.environ.get("BENCH_KAFKA_RATE", "5000"))
SECONDS = float(os.environ.get("BENCH_KAFKA_SECONDS", "30"))
TOKEN = "bench-token"
TIMEOUT_S = 300.0
ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """``python -m driftline.entry.cli ...`` children, each logging to its own file; stopped with SIGTERM."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.procs = root, env, {}

    def start(self, name: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "driftline.entry.cli", *args]
        if setpriv := shutil.which("setpriv"):
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait(self, what: str, condition, timeout_s: float = TIMEOUT_S, every_s: float = 0.05) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench: {what} not reached after {timeout_s:.0f}s")
            time.sleep(every_s)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _register_model(registry_url: str) -> None:
    data = CreditScenario().generate(TRAINING_OFFSET, 20_000)
    frame = pd.DataFrame({**data.numeric, **data.categorical})
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, data.labels)
    client = RegistryClient(registry_url, TOKEN)
    version = client.register(MODEL, trained.estimator, CONTRACT, actor="bench", recipe=DEFAULT_RECIPE,
                              profile=trained.profile)
    client.set_alias(MODEL, "champion", version.version, actor="bench", reason="bench")
    client.close()


def _encoded(codec: Codec, start: int, n: int, prefix: str) -> list[tuple[bytes, bytes, str]]:
    """(key, Avro bytes, event id) of ``n`` credit events."""
    out = []
    for event in feature_events(CreditScenario().generate(start, n)):
        event["event_id"] = f"{prefix}-{event['event_id']}"
        out.append((event["entity_id"].encode(), codec.encode(FEATURES, event), event["event_id"]))
    return out


def _count(store: Store, prefix: str) -> int:
    sql = ("SELECT count() FROM predictions FINAL "
           "WHERE role = 'champion' AND startsWith(event_id, {p:String})")
    return int(store.scalar(sql, {"p": f"{prefix}-"}))


def pipeline_events_per_s(producer: KafkaProducer, store: Store, procs: Processes, records: list, prefix: str) -> float:
    started = time.perf_counter()
    for key, value, _ in records:
        producer.produce(FEATURES, value, key=key)
    producer.flush()
    procs.wait("every prediction in the store", lambda: _count(store, prefix) >= len(records), every_s=0.1)
    return len(records) / (time.perf_counter() - started)


def raw_kafka_events_per_s(bootstrap: str, records: list) -> float:
    """The same bytes through plain confluent-kafka: produce (idempotent, acks=all) and consume in batches."""
    topic = f"bench-raw-{os.getpid()}-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # referenced until the topic exists
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    while not consumer.assignment():  # joined and assigned before the clock starts
        consumer.consume(1, 0.2)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "compression.type": "lz4"})
    received = 0

    def consume() -> None:
        nonlocal received
        deadline = time.monotonic() + TIMEOUT_S
        while received < len(records) and time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            received += len(batch)
            if batch:
                consumer.commit(asynchronous=False)

    reader = threading.Thread(target=consume)
    started = time.perf_counter()
    reader.start()
    for key, value, _ in records:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    reader.join()
    elapsed = time.perf_counter() - started
    consumer.close()
    if received < len(records):
        raise RuntimeError(f"raw consumer got {received} of {len(records)} records")
    return len(records) / elapsed


def latency_ms(producer: KafkaProducer, codec: Codec, bootstrap: str, records: list, rate: int
               ) -> tuple[np.ndarray, float]:
    """prediction_time − produce time for records offered at ``rate`` per second, and the rate
    actually offered (records / the time producing them took: below ``rate`` when this process
    could not keep up).

    ``producer`` must be warm (connected, producer id acquired), as a long-lived one is:
    a fresh idempotent producer holds its first records for about half a second.
    """
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-latency-{os.getpid()}",
                       "enable.auto.commit": False})
    partitions = reader.list_topics(PREDICTIONS, timeout=10).topics[PREDICTIONS].partitions
    ends = [TopicPartition(PREDICTIONS, p) for p in partitions]
    reader.assign([TopicPartition(tp.topic, tp.partition, reader.get_watermark_offsets(tp, timeout=10)[1])
                   for tp in ends])
    produced_ms: dict[str, int] = {}
    started = time.perf_counter()
    for i, (key, value, event_id) in enumerate(records):
        due = started + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.002))
        produced_ms[event_id] = time.time_ns() // 1_000_000
        producer.produce(FEATURES, value, key=key)
    achieved = len(records) / (time.perf_counter() - started)
    producer.flush()
    latencies: list[int] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(latencies) < len(records) and time.monotonic() < deadline:
        for m in reader.consume(1000, 0.5):
            prediction = codec.decode(PREDICTIONS, m.value())
            sent = produced_ms.get(prediction["event_id"])
            if sent is not None and prediction["role"] == "champion":
                latencies.append(to_ms(prediction["prediction_time"]) - sent)
    reader.close()
    if len(latencies) < len(records):
        raise RuntimeError(f"only {len(latencies)} of {len(records)} predictions came back")
    return np.array(latencies), achieved


def run() -> dict:
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-bench-kafka-")))
        kafka = start_kafka(root / "kafka")
        stack.callback(kafka.stop)
        apicurio = start_apicurio(root / "apicurio")
        stack.callback(apicurio.stop)
        store_port, registry_port = free_port(), free_port()
        store_url, registry_url = f"http://127.0.0.1:{store_port}", f"http://127.0.0.1:{registry_port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
               "DRIFTLINE_HOME": str(root / "home"), "DRIFTLINE_KAFKA_BOOTSTRAP": kafka.address,
               "DRIFTLINE_SCHEMA_REGISTRY_URL": apicurio.address, "DRIFTLINE_STORE_DSN": store_url,
               "DRIFTLINE_REGISTRY_URL": registry_url, "DRIFTLINE_REGISTRY_TOKEN": TOKEN, "DRIFTLINE_PARTITIONS": "3"}
        procs = Processes(root, env)
        stack.callback(procs.close)
        procs.start("store", "store", "serve", "--path", str(root / "store"), "--port", str(store_port))
        procs.wait("the store endpoint", lambda: _ok(f"{store_url}/ping"), 60)
        procs.start("registry", "serve", "registry", "--port", str(registry_port))
        procs.wait("the registry service", lambda: _ok(f"{registry_url}/healthz"), 60)
        _register_model(registry_url)
        procs.start("predictor", "serve", "predictor")
        procs.start("label-joiner", "serve", "label-joiner")

        producer = KafkaBus(kafka.address).producer()
        codec = Codec(registry_client(apicurio.address))
        store = Store(store_url, credentials_file=root / "home" / "store-credentials.json")  # as the services find it
        stack.callback(store.close)
        # Warm up: both services connected, the model loaded, the schemas registered.
        warm = _encoded(codec, 10_000_000, 1000, "warm")
        pipeline_events_per_s(producer, store, procs, warm, "warm")

        records = _encoded(codec, 0, EVENTS, "run")
        pipeline = pipeline_events_per_s(producer, store, procs, records, "run")
        raw = raw_kafka_events_per_s(kafka.address, records)

        offered = _encoded(codec, 20_000_000, int(RATE * SECONDS), "lat")
        latencies, achieved = latency_ms(producer, codec, kafka.address, offered, RATE)
        procs.check()
    return report("kafka_pipeline", events=EVENTS, pipeline_events_per_s=round(pipeline),
                  raw_kafka_events_per_s=round(raw), ratio=round(pipeline / raw, 3),
                  offered_rate_per_s=RATE, achieved_rate_per_s=round(achieved), offered_seconds=SECONDS,
                  latency_p50_ms=round(float(np.percentile(latencies, 50)), 1),
                  latency_p99_ms=round(float(np.percentile(latencies, 99)), 1),
                  latency_max_ms=int(latencies.max()))


if __name__ == "__main__":
    run()
