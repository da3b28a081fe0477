"""Two instances of the predictor and of the label-joiner vs one, on 6 partitions of a real broker.

Starts its own Kafka broker and Apicurio (``driftline.testing.kafka``), the store endpoint
and the registry, then ``driftline serve predictor`` and ``driftline serve label-joiner``
processes: one of each first, then a second of each joins the same groups (range
assignment over the co-partitioned ``predictions`` and ``labels``). Each phase is timed
from the first produce of ``BENCH_SCALE_EVENTS`` basket orders (and a label for every
other one, Avro straight to the topics) until the store holds a champion prediction for
every order and every label is joined. ``ratio`` is two instances' rate over one's,
measured in the same run on the same broker; the counts must come out exact in both.

On a machine with fewer cores than processes the ratio says how much a second instance
costs rather than what it gains: read it with ``cores``.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench.baskets import CONTRACT, MODEL, events_and_labels, trained_model
from bench.common import report
from bench.kafka_pipeline import TOKEN, Processes, _ok
from driftline.bus.kafka import KafkaBus, KafkaProducer
from driftline.codec import Codec, registry_client
from driftline.registry.client import RegistryClient
from driftline.store import Store
from driftline.testing.kafka import free_port, start_apicurio, start_kafka
from driftline.topics import FEATURES, LABELS

EVENTS = int(os.environ.get("BENCH_SCALE_EVENTS", "30000"))
PARTITIONS = 6
CHUNK = 2000
PREDICTED = f"SELECT count() FROM predictions FINAL WHERE model = '{MODEL}' AND role = 'champion'"
JOINED = f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'"


def _count(store: Store, sql: str, run: str) -> int:
    return int(store.scalar(sql + " AND startsWith(event_id, {p:String})", {"p": f"{run}-"}))


def _members(admin: AdminClient, group: str) -> int:
    """Members of a stable group that hold partitions (0 while it rebalances)."""
    try:
        d = admin.describe_consumer_groups([group])[group].result(timeout=5)
    except Exception:
        return 0
    if d.state.name != "STABLE":
        return 0
    return sum(1 for m in d.members if m.assignment.topic_partitions)


def _phase(producer: KafkaProducer, codec: Codec, store: Store, procs: Processes, n: int) -> float:
    """Orders per second from the first produce until all are scored and their labels joined."""
    run = uuid.uuid4().hex[:8]
    batches = [events_and_labels(run, start, min(CHUNK, n - start)) for start in range(0, n, CHUNK)]
    encoded = [([(e["entity_id"].encode(), codec.encode(FEATURES, e)) for e in events],
                [(x["event_id"].encode(), codec.encode(LABELS, x)) for x in labels]) for events, labels in batches]
    labels_sent = sum(len(labels) for _, labels in encoded)
    started = time.perf_counter()
    for events, labels in encoded:
        for key, value in events:
            producer.produce(FEATURES, value, key=key)
        for key, value in labels:
            producer.produce(LABELS, value, key=key)
    producer.flush()
    procs.wait("every order scored", lambda: _count(store, PREDICTED, run) >= n, every_s=0.2)
    procs.wait("every label joined", lambda: _count(store, JOINED, run) >= labels_sent, every_s=0.2)
    elapsed = time.perf_counter() - started
    # Exact, as with one instance: nothing scored or joined twice, nothing missing.
    predicted, joined = _count(store, PREDICTED, run), _count(store, JOINED, run)
    if (predicted, joined) != (n, labels_sent):
        raise RuntimeError(f"counts: {predicted} predictions of {n}, {joined} joined of {labels_sent}")
    return n / elapsed


def run() -> dict:
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-bench-scale-")))
        kafka = start_kafka(root / "kafka")
        stack.callback(kafka.stop)
        apicurio = start_apicurio(root / "apicurio")
        stack.callback(apicurio.stop)
        store_port, registry_port = free_port(), free_port()
        store_url, registry_url = f"http://127.0.0.1:{store_port}", f"http://127.0.0.1:{registry_port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
               "DRIFTLINE_HOME": str(root / "home"), "DRIFTLINE_KAFKA_BOOTSTRAP": kafka.address,
               "DRIFTLINE_SCHEMA_REGISTRY_URL": apicurio.address, "DRIFTLINE_STORE_DSN": store_url,
               "DRIFTLINE_REGISTRY_URL": registry_url, "DRIFTLINE_REGISTRY_TOKEN": TOKEN,
               "DRIFTLINE_PARTITIONS": str(PARTITIONS)}
        procs = Processes(root, env)
        stack.callback(procs.close)
        procs.start("store", "store", "serve", "--path", str(root / "store"), "--port", str(store_port))
        procs.wait("the store endpoint", lambda: _ok(f"{store_url}/ping"), 60)
        procs.start("registry", "serve", "registry", "--port", str(registry_port))
        procs.wait("the registry service", lambda: _ok(f"{registry_url}/healthz"), 60)
        trained, recipe = trained_model()
        client = RegistryClient(registry_url, TOKEN)
        version = client.register(MODEL, trained.estimator, CONTRACT, actor="bench", recipe=recipe,
                                  profile=trained.profile)
        client.set_alias(MODEL, "champion", version.version, actor="bench", reason="bench")
        client.close()

        admin = AdminClient({"bootstrap.servers": kafka.address})
        producer = KafkaBus(kafka.address).producer()
        codec = Codec(registry_client(apicurio.address))
        store = Store(store_url, credentials_file=root / "home" / "store-credentials.json")
        stack.callback(store.close)
        rates = {}
        for instances in (1, 2):
            procs.start(f"predictor-{instances}", "serve", "predictor")
            procs.start(f"label-joiner-{instances}", "serve", "label-joiner")
            for group in ("driftline-predictor", "driftline-label-joiner"):
                procs.wait(f"{instances} member(s) in {group}", lambda: _members(admin, group) == instances,
                           every_s=0.2)
            _phase(producer, codec, store, procs, 2000)  # warm: models loaded, connections up
            rates[instances] = _phase(producer, codec, store, procs, EVENTS)
        procs.check()
    return report("scale_out", events=EVENTS, partitions=PARTITIONS, cores=os.cpu_count(),
                  one_instance_events_per_s=round(rates[1]), two_instances_events_per_s=round(rates[2]),
                  ratio=round(rates[2] / rates[1], 3))


if __name__ == "__main__":
    run()
