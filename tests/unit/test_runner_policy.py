"""The runner's error policy (``Runner.process`` and ``Runner.checkpoint``), over the in-process bus and chDB.

A small stateful service counts the labels it sees (its state is the count per event id,
snapshotted like the drift-detector's), and raises on a poison record or, a few times,
with a dependency "down". Flaky wrappers around the store, the producer and the consumer
stand for a store endpoint that refuses connections, a flush not acknowledged in time
and a commit the group refused (a rebalance).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.failure import Backoff, DependencyUnavailable
from driftline.runner import Incoming, Output, Runner
from driftline.state import StateStore
from driftline.testing.samples import SAMPLES
from driftline.topics import ALL_TOPICS, LABELED, LABELS, MODELS

FAST = Backoff(initial_s=0.001, max_s=0.01)


def healthy_gauge(service: str) -> float | None:
    return REGISTRY.get_sample_value("driftline_service_healthy", {"service": service})


@dataclass
class CountingService:
    """Counts each label it handles; ``label == "poison"`` raises; ``outage`` transient failures first."""

    name: str
    topics: list[str] = field(default_factory=lambda: [LABELS])
    counts: dict[str, int] = field(default_factory=dict)
    outage: int = 0  # how many handle() calls fail with the dependency down...
    outage_from: int = 0  # ...among those with a reading numbered this or more (not replays of earlier ones)
    health_seen: list[float | None] = field(default_factory=list)

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        out = Output()
        for item in batch:  # state first, then the failure: a rollback must undo the partial batch
            event_id = item.record["event_id"]
            self.counts[event_id] = self.counts.get(event_id, 0) + 1
            if item.record["label"] == "poison":
                raise ValueError(f"cannot count {event_id}: poison")
        if self.outage and any(int(item.record["event_id"].split("-")[1]) >= self.outage_from for item in batch):
            self.outage -= 1
            self.health_seen.append(healthy_gauge(self.name))
            raise DependencyUnavailable("model registry: connection refused")
        out.add_rows("labels", [label_row(item.record) for item in batch])
        return out

    def snapshot(self) -> bytes:
        return json.dumps(self.counts).encode()

    def restore(self, snapshot: bytes) -> None:
        self.counts = json.loads(snapshot)


def label_row(record: dict) -> dict:
    return {"event_id": record["event_id"], "model": record["model"], "label": record["label"],
            "value": record["value"], "label_time": record["label_time"], "status": "counted",
            "status_rank": 1, "reason": "", "model_version": 1, "predicted_label": "", "error": None,
            "event_time": None, "updated_at": record["label_time"]}


class FlakyStore:
    """A store whose ``insert`` refuses ``failures`` times (a store endpoint that is down)."""

    def __init__(self, store, failures: int, service: str):
        self.store, self.failures, self.service = store, failures, service
        self.health_seen: list[float | None] = []

    def insert(self, table, rows):
        if self.failures:
            self.failures -= 1
            self.health_seen.append(healthy_gauge(self.service))
            raise ConnectionRefusedError(111, "Connection refused")
        return self.store.insert(table, rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


class FlakyBus:
    """A MemoryBus whose producers fail ``flush_failures`` flushes and whose consumers refuse
    ``refused_commits`` commits the way KafkaConsumer does (``commit`` returns False)."""

    def __init__(self, bus: MemoryBus, flush_failures: int = 0, refused_commits: int = 0, refuse_after: int = 0):
        self.bus, self.flush_failures, self.refused_commits, self.refuse_after = bus, flush_failures, refused_commits, refuse_after
        self.commits = 0

    def producer(self):
        bus, producer = self, self.bus.producer()

        class Producer:
            def produce(self, *args, **kwargs):
                producer.produce(*args, **kwargs)

            def flush(self, timeout_s: float = 30.0):
                if bus.flush_failures:
                    bus.flush_failures -= 1
                    raise DependencyUnavailable(f"broker: 12 records not acknowledged after {timeout_s}s")
                producer.flush(timeout_s)

        return Producer()

    def consumer(self, group, topics):
        bus, consumer = self, self.bus.consumer(group, topics)

        class Consumer:
            def commit(self, offsets):
                bus.commits += 1
                if bus.refused_commits and bus.commits > bus.refuse_after:
                    bus.refused_commits -= 1
                    return False
                consumer.commit(offsets)
                return True

            def __getattr__(self, name):
                return getattr(consumer, name)

        return Consumer()


@pytest.fixture
def codec() -> Codec:
    return Codec(registry_client(None))


@pytest.fixture(params=["point-per-batch", "replay"])
def rollback_mode(request) -> str:
    """Both ways a RollbackPoint goes back: a snapshot before every batch (cheap snapshots),
    or one old point and the batches handled since replayed (expensive snapshots)."""
    return request.param


def set_mode(runner: Runner, mode: str) -> Runner:
    if mode == "replay":
        runner.rollback_point.cheap_s, runner.rollback_point.every_s = -1.0, 3600.0
    return runner


def labels_bus(codec: Codec, n: int, poison_at: set[int] = frozenset()) -> tuple[MemoryBus, dict[int, bytes]]:
    bus = MemoryBus(retention_bytes=64 << 20)
    bus.create_topics({t: 1 for t in ALL_TOPICS})
    producer, sent = bus.producer(), {}
    for i in range(n):
        record = {"model": "pumps", "event_id": f"reading-{i}", "label": "poison" if i in poison_at else "ok",
                  "value": None, "label_time": 1_767_225_600_000 + i}
        sent[i] = codec.encode(LABELS, record)
        producer.produce(LABELS, sent[i])
    return bus, sent


def drain(runner: Runner) -> None:
    while runner.step(0.0):
        pass


def dead_letters(store) -> list[tuple]:
    return store.query("SELECT service, topic, partition, offset, error, lower(hex(payload)) FROM dead_letters FINAL "
                       "ORDER BY offset")[1]


def committed(bus: MemoryBus, service: str) -> int:
    return bus._groups[f"driftline-{service}"].committed.get((LABELS, 0), 0)


def test_a_poison_record_in_a_batch_of_1000_is_dead_lettered_alone(store, codec, rollback_mode) -> None:
    bus, sent = labels_bus(codec, 1300, poison_at={817})
    service = CountingService("counter-poison")
    runner = set_mode(Runner(service, bus, codec, store, batch_size=300, backoff=FAST), rollback_mode)
    assert runner.step(0.0) == 300  # a batch before, whose counts a replay must keep
    runner.batch_size = 1000
    assert runner.step(0.0) == 1000  # one batch holds all the others

    assert set(service.counts) == {f"reading-{i}" for i in range(1300) if i != 817}
    assert set(service.counts.values()) == {1}  # rolled back, then each good record counted once
    [(svc, topic, partition, offset, error, payload)] = dead_letters(store)
    assert (svc, topic, partition, offset) == ("counter-poison", LABELS, 0, 817)
    assert error == "ValueError: cannot count reading-817: poison"
    assert payload == sent[817].hex()  # the original bytes, as they were on the topic
    rows = store.query("SELECT count() FROM labels FINAL WHERE status = 'counted'")[1][0][0]
    assert rows == 1299  # the outputs of the good records, merged
    assert committed(bus, "counter-poison") == 1300
    assert runner.dead_lettered == 1 and runner.healthy


def test_two_poison_records_at_the_edges_and_a_restart_add_nothing(store, codec, rollback_mode) -> None:
    bus, _ = labels_bus(codec, 300, poison_at={0, 299})
    service = CountingService("counter-edges")
    runner = set_mode(Runner(service, bus, codec, store, batch_size=100, backoff=FAST), rollback_mode)
    drain(runner)
    assert len(service.counts) == 298 and set(service.counts.values()) == {1}
    assert [row[3] for row in dead_letters(store)] == [0, 299]
    runner.close()
    # A second runner of the same group: everything was committed, nothing comes again.
    again = Runner(CountingService("counter-edges"), bus, codec, store, batch_size=100, backoff=FAST)
    assert again.step(0.0) == 0
    assert len(dead_letters(store)) == 2


def test_a_dependency_down_in_handle_is_retried_never_dead_lettered(store, codec, rollback_mode) -> None:
    bus, _ = labels_bus(codec, 700)
    service = CountingService("counter-handle")
    runner = set_mode(Runner(service, bus, codec, store, batch_size=200, backoff=FAST), rollback_mode)
    assert runner.step(0.0) == 200 and healthy_gauge("counter-handle") == 1
    service.outage, service.outage_from = 4, 200
    runner.batch_size = 500
    drain(runner)
    assert service.health_seen == [1, 0, 0, 0]  # unhealthy from the first failure until it answers
    assert healthy_gauge("counter-handle") == 1 and runner.healthy
    assert len(service.counts) == 700 and set(service.counts.values()) == {1}  # each retry rolled back
    assert dead_letters(store) == []
    assert committed(bus, "counter-handle") == 700


def test_the_store_down_at_insert_is_retried_and_the_batch_is_not_skipped(store, codec) -> None:
    bus, _ = labels_bus(codec, 400)
    flaky = FlakyStore(store, failures=3, service="counter-store")
    service = CountingService("counter-store")
    runner = Runner(service, bus, codec, flaky, batch_size=400, backoff=FAST)
    drain(runner)
    assert flaky.health_seen == [1, 0, 0]
    assert healthy_gauge("counter-store") == 1
    assert store.query("SELECT count() FROM labels FINAL")[1][0][0] == 400
    assert dead_letters(store) == [] and committed(bus, "counter-store") == 400
    assert set(service.counts.values()) == {1}  # handled once: only the checkpoint step was retried


def test_a_flush_not_acknowledged_is_retried(store, codec) -> None:
    bus, _ = labels_bus(codec, 200, poison_at={50})  # a dead letter to publish, so the flush matters
    flaky = FlakyBus(bus, flush_failures=2)
    runner = Runner(CountingService("counter-flush"), flaky, codec, store, batch_size=200, backoff=FAST)
    drain(runner)
    assert len(dead_letters(store)) == 1  # the poison only; the flush failures dead-lettered nothing
    assert committed(bus, "counter-flush") == 200 and flaky.flush_failures == 0
    dlq = bus.consumer("probe", ["dlq"]).poll_batch(100, 0.0)
    assert len({m.value for m in dlq}) == 1  # republished after the failed flush: the same letter


def test_a_refused_commit_goes_back_to_the_saved_state_and_counts_exactly(store, codec) -> None:
    bus, _ = labels_bus(codec, 3000)
    flaky = FlakyBus(bus, refused_commits=1, refuse_after=1)  # the second batch's commit is refused
    service = CountingService("counter-rebalance")
    runner = Runner(service, flaky, codec, store, batch_size=1000, backoff=FAST, state=StateStore(store),
                    state_every_s=0.0)  # state saved at every checkpoint
    assert runner.step(0.0) == 1000
    assert runner.step(0.0) == 0  # refused: state back to after batch 1, offsets back to 1000
    assert len(service.counts) == 1000
    drain(runner)
    assert len(service.counts) == 3000 and set(service.counts.values()) == {1}
    assert committed(bus, "counter-rebalance") == 3000


def test_a_refused_commit_before_any_saved_state_goes_back_to_the_batch_start(store, codec, rollback_mode) -> None:
    bus, _ = labels_bus(codec, 3000)
    flaky = FlakyBus(bus, refused_commits=1, refuse_after=1)
    service = CountingService("counter-rebalance-first")
    runner = set_mode(Runner(service, flaky, codec, store, batch_size=1000, backoff=FAST, state=StateStore(store),
                             state_every_s=3600), rollback_mode)
    assert runner.step(0.0) == 1000
    assert runner.step(0.0) == 0  # refused, and no state saved yet: back to before this batch
    assert len(service.counts) == 1000
    drain(runner)
    assert len(service.counts) == 3000 and set(service.counts.values()) == {1}


def test_stop_interrupts_the_wait_and_leaves_the_batch_uncommitted(store, codec) -> None:
    bus, _ = labels_bus(codec, 100)
    service = CountingService("counter-stop", outage=10**9)  # the dependency never comes back
    runner = Runner(service, bus, codec, store, batch_size=100, backoff=Backoff(0.05, 0.05))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    assert _wait(lambda: len(service.health_seen) >= 3)
    assert not runner.healthy and healthy_gauge("counter-stop") == 0
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    runner.close()
    assert committed(bus, "counter-stop") == 0 and dead_letters(store) == []
    assert service.counts == {}  # rolled back before the wait: nothing half-counted survives


def _wait(condition, timeout_s: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return condition()


def test_a_dependency_down_during_a_replay_finishes_the_rollback_before_handling(store, codec) -> None:
    """In replay mode the batches since the point are handled again; if one of those fails too
    (the dependency is still down), the rollback is finished before the next attempt."""
    bus, _ = labels_bus(codec, 600)
    service = CountingService("counter-replay")
    runner = set_mode(Runner(service, bus, codec, store, batch_size=200, backoff=FAST), "replay")
    assert runner.step(0.0) == 200
    service.outage = 3  # fails the batch, then the replay of the first batch, then the batch again
    drain(runner)
    assert service.outage == 0
    assert len(service.counts) == 600 and set(service.counts.values()) == {1}
    assert dead_letters(store) == []


def test_up_healthz_answers_503_naming_a_runner_that_waits(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from driftline.config import Settings
    from driftline.entry.embedded import Embedded
    from driftline.entry.up import build_app

    settings = Settings(home=tmp_path / "home")
    embedded = Embedded(settings)
    release = threading.Event()
    runners_thread = threading.Thread(target=release.wait)
    runners_thread.start()
    try:
        client = TestClient(build_app(embedded, settings, runners_thread))
        assert client.get("/healthz").status_code == 200
        joiner = next(r for r in embedded.runners if r.service.name == "label-joiner")
        joiner.outage.down("the store", ConnectionRefusedError(111, "Connection refused"))
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json()["unhealthy"] == ["label-joiner"] and "label-joiner" in answer.json()["status"]
        joiner.outage.up()
        assert client.get("/healthz").status_code == 200
    finally:
        release.set()
        runners_thread.join()
        embedded.close()


def test_a_kafka_flush_with_no_broker_is_a_dependency_unavailable() -> None:
    """What used to be KafkaException("N records not acknowledged") is transient now: the runner
    retries the batch instead of stopping (no broker listens on this port)."""
    import socket

    from driftline.bus.kafka import KafkaBus
    from driftline.failure import is_transient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    producer = KafkaBus(f"127.0.0.1:{port}", extra={"log_level": 0}).producer()
    producer.produce("labels", b"\x00", key=b"k")
    with pytest.raises(DependencyUnavailable, match="not acknowledged") as caught:
        producer.flush(timeout_s=0.5)
    assert is_transient(caught.value)


def test_the_registry_down_mid_batch_at_decode_is_waited_for_never_dead_lettered(store, codec) -> None:
    bus, _ = labels_bus(codec, 300)

    class RegistryAwayAtRecord:
        """Decodes as ``codec``, but the registry is away for the 3 first tries of record 150."""

        def __init__(self):
            self.failures = 3

        def decode(self, topic, data):
            record = codec.decode(topic, data)
            if record["event_id"] == "reading-150" and self.failures:
                self.failures -= 1
                raise DependencyUnavailable("schema registry, schema id 1: connection refused")
            return record

        def __getattr__(self, name):
            return getattr(codec, name)

    flaky = RegistryAwayAtRecord()
    service = CountingService("counter-registry")
    runner = Runner(service, bus, flaky, store, batch_size=300, backoff=FAST)
    drain(runner)
    assert flaky.failures == 0  # it was away, and asked again until it answered
    assert len(service.counts) == 300 and set(service.counts.values()) == {1}
    assert dead_letters(store) == [] and runner.dead_lettered == 0
    assert committed(bus, "counter-registry") == 300 and runner.healthy


@dataclass
class ModelWatcher(CountingService):
    """Counts labels and keeps the model events it reads on its control topic."""

    control_topics: list[str] = field(default_factory=lambda: [MODELS])
    model_events: list[dict] = field(default_factory=list)

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        self.model_events += [item.record for item in batch if item.topic == MODELS]
        return super().handle([item for item in batch if item.topic != MODELS], now_ms)


def lose_group_session(consumer) -> dict:
    """Make ``consumer`` act as librdkafka's after a broker outage longer than the group session:
    every commit fails ("Waiting for coordinator") until it is polled again, which rejoins it."""
    session = {"lost": True, "commit_failures": 0}
    real_poll, real_commit = consumer.poll_batch, consumer.commit

    def poll_batch(max_records, timeout_s, *args, **kwargs):
        if session["commit_failures"]:  # a poll after a failed commit serves the rejoin
            session["lost"] = False
        return real_poll(max_records, timeout_s, *args, **kwargs)

    def commit(offsets):
        if session["lost"]:
            session["commit_failures"] += 1
            raise DependencyUnavailable("broker: Commit failed: Local: Waiting for coordinator")
        return real_commit(offsets)

    consumer.poll_batch, consumer.commit = poll_batch, commit
    return session


def test_a_control_commit_that_needs_a_poll_never_stalls_the_runner(store, codec) -> None:
    """After a broker outage longer than the group session, librdkafka's control consumer must be
    polled to rejoin its group before a commit can succeed ("Waiting for coordinator" until then).
    Seen in CI: the predictor retried that commit for ever, polled nothing, its model swap unread."""
    bus, _ = labels_bus(codec, 300)
    service = ModelWatcher("counter-control")
    runner = Runner(service, bus, codec, store, batch_size=100, backoff=FAST)
    session = lose_group_session(runner.control)  # the broker is back; the group session is not
    bus.producer().produce(MODELS, codec.encode(MODELS, SAMPLES[MODELS]), key=b"credit")
    finished = threading.Event()
    threading.Thread(target=lambda: (drain(runner), finished.set()), daemon=True).start()
    assert finished.wait(30), "the runner is stuck retrying a commit that only a poll can unblock"
    assert [e["version"] for e in service.model_events] == [SAMPLES[MODELS]["version"]]
    assert len(service.counts) == 300 and committed(bus, "counter-control") == 300
    assert not session["lost"]  # the consumer was polled again, so its next commit could go through


def test_a_data_commit_that_needs_a_poll_counts_as_refused_after_the_patience(store, codec) -> None:
    """The data consumer's commit can need a poll too (its group session ran out during a broker
    outage): retried only for ``commit_patience_s``, then the batch goes back and is read again,
    counted once, instead of a runner that retries for ever and polls nothing."""
    bus, _ = labels_bus(codec, 300)
    service = CountingService("counter-patience")
    runner = Runner(service, bus, codec, store, batch_size=100, backoff=FAST, commit_patience_s=0.05)
    session = lose_group_session(runner.consumer)
    finished = threading.Event()

    def run() -> None:
        assert runner.step(0.0) == 0  # the first batch's commit counted as refused: it comes again
        drain(runner)
        finished.set()
    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(30), "the runner is stuck retrying a commit that only a poll can unblock"
    assert session["commit_failures"] > 1 and not session["lost"]  # retried, then polled again
    assert len(service.counts) == 300 and set(service.counts.values()) == {1}  # the first batch once
    assert committed(bus, "counter-patience") == 300


@dataclass
class Relay(CountingService):
    """Counts each label and publishes it on ``labeled`` (a service whose outputs have readers)."""

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        out = super().handle(batch, now_ms)
        for item in batch:
            out.publish(LABELED, item.record["event_id"], {**SAMPLES[LABELED], "event_id": item.record["event_id"]})
        return out


def test_a_bus_without_room_for_a_batchs_outputs_undoes_the_batch_and_the_runner_goes_on(store, codec) -> None:
    """Found by the overload bench: the embedded bus refused a batch's outputs (their readers
    lagged by its limit) and BusFull escaped Runner.step, stopping every embedded service. Now
    the batch is undone and read again once the readers catch up: nothing lost, counted once."""
    bus, _ = labels_bus(codec, 300)
    reader = bus.consumer("downstream", [LABELED])  # a reader that lags until it is polled
    service = Relay("relay")
    runner = Runner(service, bus, codec, store, batch_size=100, backoff=FAST)
    assert runner.step(0.0) == 100
    bus.max_lag_bytes, bus.retention_bytes = bus._topics[LABELED][0].retained_bytes + 1, 0  # full up
    assert runner.step(0.0) == 0  # no room for the next 100 outputs: the batch is undone, the step returns
    assert len(service.counts) == 100 and committed(bus, "relay") == 100
    handled = []
    service.handle = lambda batch, now_ms, handle=service.handle: handled.append(len(batch)) or handle(batch, now_ms)
    assert runner.step(0.0) == 0 and handled == []  # still full: not handled again only to be undone
    bus.max_lag_bytes = 2 * bus.max_lag_bytes  # room for one batch's outputs once the reader catches up
    relayed = []
    for _ in range(100):
        runner.step(0.0)
        while batch := reader.poll_batch(1000, 0.0):  # the reader catches up: room again
            relayed += [codec.decode(m.topic, m.value)["event_id"] for m in batch]
            reader.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
        if committed(bus, "relay") == 300:
            break
    assert committed(bus, "relay") == 300 and set(service.counts.values()) == {1}  # each label counted once
    assert set(relayed) == {f"reading-{i}" for i in range(300)}  # every output published (some twice)
