"""Scale-out over a real broker: two instances of the predictor and of the label-joiner on 6
partitions count exactly what one instance counts; a second drift-detector stands by and takes
over when the first is killed; topics a group joins must be co-partitioned.

Every service is a ``driftline serve`` process, as a deployment runs it. The broker is this
module's own (a KRaft broker in a temp dir): its topics have 6 partitions, while other modules'
session broker has topics of 3, and nothing here deletes anyone's topics. The model is a
basket-returns classifier of our own (not the demo's credit data); events and labels are Avro
records produced straight to the ``features`` and ``labels`` topics, as any Avro producer would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.bus.kafka import KafkaBus
from driftline.codec import Codec, registry_client
from driftline.contract import FeatureContract
from driftline.models import DEFAULT_RECIPE
from driftline.registry.client import RegistryClient
from driftline.store import Store
from driftline.testing.kafka import InfraError, free_port, start_kafka
from driftline.topics import ALL_TOPICS, FEATURES, LABELED, LABELS, PREDICTIONS
from driftline.training import train

REPO = Path(__file__).resolve().parents[2]
TOKEN = "scale-out-token"
PARTITIONS = 6
MODEL = "basket-returns"
CONTRACT = FeatureContract(numeric=("basket_eur", "items", "days_since_last"), categorical=("channel",),
                           classes=("kept", "returned"))
CHANNELS = np.array(["web", "app", "store"])
EPOCH_MS = 1_790_000_000_000
START_TIMEOUT_S = 120.0
FLOW_TIMEOUT_S = 180.0


def baskets(start: int, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Orders ``start .. start+n`` and whether each was returned (seeded by position: reproducible)."""
    rng = np.random.default_rng(start)
    frame = pd.DataFrame({"basket_eur": rng.gamma(2.0, 40.0, n), "items": rng.poisson(3, n).astype(float) + 1,
                          "days_since_last": rng.exponential(20.0, n), "channel": rng.choice(CHANNELS, n)})
    odds = 0.02 * frame["basket_eur"] - 0.05 * frame["days_since_last"] + (frame["channel"] == "web") - 1.5
    returned = rng.random(n) < 1 / (1 + np.exp(-odds))
    return frame, np.where(returned, "returned", "kept")


def order_id(run: str, i: int) -> str:
    return f"{run}-order-{i:08d}"


# --------------------------------------------------------------------------- processes


class Proc:
    """One ``python -m driftline.entry.cli ...`` process logging to its own file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name, self.args, self.env, self.log = name, args, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "driftline.entry.cli", *self.args]
        if setpriv := shutil.which("setpriv"):
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Deployment:
    def __init__(self, root: Path, bootstrap: str, schema_registry_url: str):
        self.root, self.bootstrap = root, bootstrap
        self.run = uuid.uuid4().hex[:8]
        self.store_url, self.registry_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        (root / "home").mkdir()
        (root / "logs").mkdir()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
                    "PYTHONUNBUFFERED": "1", "DRIFTLINE_HOME": str(root / "home"),
                    "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap, "DRIFTLINE_SCHEMA_REGISTRY_URL": schema_registry_url,
                    "DRIFTLINE_STORE_DSN": self.store_url, "DRIFTLINE_REGISTRY_URL": self.registry_url,
                    "DRIFTLINE_REGISTRY_TOKEN": TOKEN, "DRIFTLINE_PARTITIONS": str(PARTITIONS),
                    "DRIFTLINE_KAFKA_CONFIG": json.dumps({"client.id": f"scale-{self.run}"})}
        self.procs: dict[str, Proc] = {}
        self.metrics: dict[str, int] = {}
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.store: Store | None = None
        self.codec = Codec(registry_client(schema_registry_url))
        self.producer = KafkaBus(bootstrap).producer()

    def proc(self, name: str, *args: str, metrics: bool = False) -> Proc:
        env = self.env
        if metrics:
            self.metrics[name] = free_port()
            env = {**env, "DRIFTLINE_METRICS_PORT": str(self.metrics[name])}
        self.procs[name] = Proc(name, list(args), env, self.root / "logs" / f"{name}.log")
        return self.procs[name]

    def logs(self) -> str:
        return "\n".join(f"----- {n} (alive={p.alive()}) -----\n" + "\n".join(p.text().splitlines()[-20:])
                         for n, p in self.procs.items())

    def wait_until(self, what: str, condition: Callable[[], Any], timeout_s: float = FLOW_TIMEOUT_S,
                   must_live: tuple[str, ...] | None = None) -> Any:
        deadline, delay = time.monotonic() + timeout_s, 0.05
        while True:
            dead = [n for n in (self.procs if must_live is None else must_live) if not self.procs[n].alive()]
            if dead:
                pytest.fail(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            last = condition()
            if last:
                return last
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not reached after {timeout_s:.0f}s (last {last!r})\n{self.logs()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def start_store(self) -> None:
        self.proc("store", "store", "serve", "--path", str(self.root / "store"), "--port",
                  self.store_url.rsplit(":", 1)[1]).start()
        self.wait_until("the store endpoint", lambda: _ok(f"{self.store_url}/ping"), START_TIMEOUT_S)
        self.store = Store(self.store_url, credentials_file=self.root / "home" / "store-credentials.json")

    def start_registry(self) -> None:
        """The registry service (it creates the topics it does not find, with 6 partitions)."""
        if "registry" in self.procs:
            return
        self.proc("registry", "serve", "registry", "--port", self.registry_url.rsplit(":", 1)[1]).start()
        self.wait_until("the registry", lambda: _ok(f"{self.registry_url}/healthz"), START_TIMEOUT_S)

    def register_model(self) -> int:
        frame, labels = baskets(10_000_000, 5000)
        trained = train(DEFAULT_RECIPE, CONTRACT, frame, labels)
        client = RegistryClient(self.registry_url, TOKEN)
        try:
            version = client.register(MODEL, trained.estimator, CONTRACT, actor="test", recipe=DEFAULT_RECIPE,
                                      profile=trained.profile)
            client.set_alias(MODEL, "champion", version.version, actor="test", reason="first champion")
            return version.version
        finally:
            client.close()

    def members(self, group: str) -> list[set[tuple[str, int]]]:
        """Each member's assignment, when the group is stable (otherwise empty)."""
        try:
            d = self.admin.describe_consumer_groups([group])[group].result(timeout=5)
        except Exception:
            return []
        if d.state.name != "STABLE":
            return []
        return [{(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in d.members]

    def count(self, sql: str) -> int:
        return int(self.store.scalar(sql))

    def produce(self, topic: str, records: list[tuple[str, dict]]) -> None:
        for key, record in records:
            self.producer.produce(topic, self.codec.encode(topic, record), key=key.encode())
        self.producer.flush()

    def stream(self, start: int, n: int, chunk: int = 1000) -> int:
        """Orders ``start .. start+n`` to ``features``, their labels to ``labels``; returns labels sent.

        One order in 10 never gets a label; one label in 20 is sent a chunk *before* its order
        (it waits in the joiner that owns its partition), the others right after their chunk."""
        sent = 0
        for first in range(start, start + n, chunk):
            size = min(chunk, start + n - first)
            frame, labels = baskets(first, size)
            ids = range(first, first + size)
            events = [(f"shopper-{i % 997}", {
                "model": MODEL, "event_id": order_id(self.run, i), "entity_id": f"shopper-{i % 997}",
                "event_time": EPOCH_MS + i * 50,
                "numeric_features": {c: float(frame[c].iloc[k]) for c in CONTRACT.numeric},
                "categorical_features": {"channel": str(frame["channel"].iloc[k])}}) for k, i in enumerate(ids)]
            label_records = [(order_id(self.run, i), {"model": MODEL, "event_id": order_id(self.run, i),
                                                      "label": str(labels[k]), "value": None,
                                                      "label_time": EPOCH_MS + i * 50 + 60_000})
                             for k, i in enumerate(ids) if i % 10 != 3]
            early = [r for r in label_records if int(r[0].rsplit("-", 1)[1]) % 20 == 7]
            late = [r for r in label_records if int(r[0].rsplit("-", 1)[1]) % 20 != 7]
            self.produce(LABELS, early)
            self.produce(FEATURES, events)
            self.produce(LABELS, late)
            sent += len(label_records)
        return sent

    def keys_on(self, topic: str) -> Counter[bytes]:
        """Every key of this run on ``topic``, read to its end, with how often it occurs."""
        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"keys-{uuid.uuid4().hex[:8]}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        reader.subscribe([topic])
        keys: Counter[bytes] = Counter()
        prefix = self.run.encode()
        try:
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 3.0:
                batch = reader.consume(5000, 0.5)
                if batch:
                    quiet_since = time.monotonic()
                keys.update(m.key() for m in batch if m.error() is None and m.key().startswith(prefix))
        finally:
            reader.close()
        return keys

    def scrape(self, name: str, metric: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics[name]}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{"))

    def close(self) -> None:
        self.producer.flush(5)
        for name in [n for n in self.procs if n not in ("store", "registry")] + ["registry", "store"]:
            if name in self.procs:
                self.procs[name].stop()
        if self.store is not None:
            self.store.close()
        self.producer = self.admin = None  # their librdkafka handles go before the broker does


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory) -> Iterator[str]:
    """A broker of this module's own: its topics get 6 partitions whatever other modules created."""
    workdir = tmp_path_factory.mktemp("scale-kafka")
    try:
        kafka = start_kafka(workdir, die_with_parent=True)
    except InfraError as exc:
        pytest.skip(f"cannot start a local kafka: {exc}")
    try:
        yield kafka.address
    finally:
        kafka.stop()


@pytest.fixture(scope="module")
def deployment(own_broker, schema_registry_url, tmp_path_factory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("scale-out"), own_broker, schema_registry_url)
    try:
        d.start_store()
        yield d
    finally:
        d.close()


# --------------------------------------------------------------------------- tests


def test_a_joiner_refuses_topics_with_different_partition_counts(deployment: Deployment) -> None:
    """A user's existing ``labels`` topic has 3 partitions, ``predictions`` 6: the label-joiner
    exits 1 with one line naming both topics instead of joining half the labels on the wrong
    instance. Then the topic is recreated with 6 partitions for the tests that follow."""
    admin = deployment.admin
    for topic, n in ((PREDICTIONS, PARTITIONS), (LABELS, 3)):
        admin.create_topics([NewTopic(topic, num_partitions=n, replication_factor=1)])[topic].result(30)
    joiner = deployment.proc("joiner-refused", "serve", "label-joiner")
    joiner.start()
    assert joiner.popen.wait(120) == 1, joiner.text()
    last = joiner.text().strip().splitlines()[-1]
    assert last.startswith("driftline serve: TopicsNotCoPartitioned: group driftline-label-joiner reads "), last
    assert "labels has 3, predictions has 6" in last and "--topic labels --partitions 6" in last, last
    assert "Traceback" not in joiner.text()
    del deployment.procs["joiner-refused"]

    admin.delete_topics([LABELS])[LABELS].result(30)
    deployment.wait_until("labels deleted", lambda: LABELS not in admin.list_topics(timeout=10).topics, 60)

    def recreated() -> bool:
        try:
            admin.create_topics([NewTopic(LABELS, num_partitions=PARTITIONS, replication_factor=1)])[LABELS].result(30)
        except Exception:  # still marked for deletion: try again
            return False
        return True

    deployment.wait_until("labels recreated with 6 partitions", recreated, 60)


def test_two_predictors_and_two_joiners_count_what_one_would(deployment: Deployment) -> None:
    deployment.start_registry()
    KafkaBus(deployment.bootstrap).create_topics({t: PARTITIONS for t in ALL_TOPICS})
    version = deployment.register_model()
    for i in (1, 2):
        deployment.proc(f"predictor-{i}", "serve", "predictor", metrics=True).start()
        deployment.proc(f"label-joiner-{i}", "serve", "label-joiner", metrics=True).start()
    for service, topics in (("predictor", [FEATURES]), ("label-joiner", [PREDICTIONS, LABELS])):
        assignments = deployment.wait_until(
            f"two {service}s sharing the {PARTITIONS} partitions",
            lambda: (a if len(a := deployment.members(f"driftline-{service}")) == 2 and all(a) else None),
            START_TIMEOUT_S)
        if service == "label-joiner":  # range assignment: partition i of both topics to the same instance
            for assigned in assignments:
                assert {p for t, p in assigned if t == PREDICTIONS} == {p for t, p in assigned if t == LABELS}

    n = 12_000
    labels = deployment.stream(0, n)
    run = deployment.run
    where = f"model = '{MODEL}' AND startsWith(event_id, '{run}-')"
    deployment.wait_until(f"{n} champion predictions",
                          lambda: deployment.count(f"SELECT count() FROM predictions FINAL WHERE role = 'champion' "
                                                   f"AND {where}") == n)
    deployment.wait_until(f"{labels} joined labels",
                          lambda: deployment.count(f"SELECT count() FROM labels FINAL WHERE status = 'joined' "
                                                   f"AND {where}") == labels)
    # Exactly what one instance gives: every order scored once, every label joined once.
    assert deployment.count(f"SELECT count() FROM predictions FINAL WHERE {where}") == n
    assert deployment.count(f"SELECT count(DISTINCT event_id) FROM predictions WHERE {where}") == n
    assert deployment.count(f"SELECT count() FROM labels FINAL WHERE {where}") == labels
    assert deployment.count(f"SELECT count() FROM labels FINAL WHERE status != 'joined' AND {where}") == 0
    assert deployment.count(f"SELECT count() FROM dead_letters FINAL") == 0
    labeled = deployment.keys_on(LABELED)
    assert len(labeled) == labels and max(labeled.values()) == 1, Counter(labeled.values())
    predictions = deployment.keys_on(PREDICTIONS)
    assert len(predictions) == n
    versions = deployment.store.query(f"SELECT DISTINCT model_version FROM predictions FINAL WHERE {where}")[1]
    assert versions == [(version,)]
    # Both instances of each service did part of the work.
    for service, metric in (("predictor", "driftline_records_out_total"), ("label-joiner", "driftline_records_in_total")):
        shares = [deployment.scrape(f"{service}-{i}", metric) for i in (1, 2)]
        print(f"{service}: {metric} per instance {shares}")
        assert all(share > 0 for share in shares), shares


def test_a_second_drift_detector_stands_by_and_takes_over_when_the_first_is_killed(deployment: Deployment) -> None:
    deployment.start_registry()
    first = deployment.proc("drift-detector-1", "serve", "drift-detector")
    first.start()
    deployment.wait_until("the first drift-detector owning its group",
                          lambda: (a := deployment.members("driftline-drift-detector")) and len(a) == 1
                          and len(a[0]) == 2 * PARTITIONS and "stands by" not in first.text(), START_TIMEOUT_S)
    second = deployment.proc("drift-detector-2", "serve", "drift-detector")
    second.start()
    deployment.wait_until("the second one standing by", lambda: "stands by" in second.text(), START_TIMEOUT_S)
    assert "another instance owns consumer group driftline-drift-detector" in second.text()
    assert len(deployment.members("driftline-drift-detector")) == 1  # it never joined the group
    assert second.alive()

    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)
    deployment.wait_until("the standby taking over", lambda: "taking over group driftline-drift-detector" in second.text(),
                          START_TIMEOUT_S, must_live=("store", "registry", "drift-detector-2"))
    deployment.wait_until("the new owner holding every partition",
                          lambda: (a := deployment.members("driftline-drift-detector")) and len(a) == 1
                          and len(a[0]) == 2 * PARTITIONS, START_TIMEOUT_S,
                          must_live=("store", "registry", "drift-detector-2"))
    del deployment.procs["drift-detector-1"]
