"""The registry's outbox: an alias move and its model event are one transaction; the event
reaches the bus once, in order, after any number of failed attempts and across a crash."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from driftline.contract import FeatureContract
from driftline.registry import Registry
from driftline.failure import Backoff
from driftline.registry.outbox import OutboxPublisher
from driftline.services.registry.app import create_app
from driftline.testing.served import ServedApp

CONTRACT = FeatureContract(numeric=("x",))
TOKEN = "outbox-test-token"


def fitted(c: float = 1.0):
    return LogisticRegression(C=c).fit([[0.0], [1.0], [2.0], [3.0]], ["0", "0", "1", "1"])


class FlakyBus:
    """A bus that refuses the first ``failures`` sends (the broker is down), then acknowledges."""

    def __init__(self, failures: int):
        self.failures = failures
        self.attempts = 0
        self.acknowledged: list[dict] = []
        self.lock = threading.Lock()

    def send(self, event: dict) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise ConnectionError("broker down")
            self.acknowledged.append(event)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_a_change_writes_its_event_to_the_outbox_in_the_same_transaction(registry):
    registry.register("m", fitted(), CONTRACT, actor="a")
    registry.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    pending = registry.pending_events()
    assert [(e["action"], e["alias"], e["version"]) for _, e in pending] == [
        ("registered", None, 1), ("alias_moved", "champion", 1)]
    assert pending[1][1]["sha256"] == registry.get("m", 1).sha256
    # A move that is refused writes neither the alias, nor an audit row, nor an event.
    with pytest.raises(LookupError):
        registry.set_alias("m", "champion", 7, actor="a", reason="no such version")
    assert len(registry.pending_events()) == 2 and len(registry.audit_log("m")) == 2


def test_a_failing_listener_does_not_fail_a_durable_change(registry):
    seen = []

    def broken(event):
        raise RuntimeError("telemetry is broken")

    registry.listeners += [broken, seen.append]
    registry.register("m", fitted(), CONTRACT, actor="a")
    event = registry.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    assert event["action"] == "alias_moved" and registry.aliases("m") == {"champion": 1}
    assert [e["action"] for e in seen] == ["registered", "alias_moved"]  # later listeners still told


def test_events_are_published_in_order_once_each_after_failures(registry):
    registry.register("m", fitted(1.0), CONTRACT, actor="a")
    registry.register("m", fitted(0.1), CONTRACT, actor="a")
    registry.set_alias("m", "champion", 1, actor="a", reason="first", no_monitoring=True)
    registry.set_alias("m", "champion", 2, actor="a", reason="second", no_monitoring=True)
    bus = FlakyBus(failures=3)
    publisher = OutboxPublisher(registry, bus.send, backoff=Backoff(initial_s=0.001, max_s=0.01))
    for _ in range(3):
        with pytest.raises(ConnectionError):
            publisher.drain()
    assert registry.pending_events() and bus.acknowledged == []
    assert publisher.drain() == 4
    assert [(e["action"], e["version"]) for e in bus.acknowledged] == [
        ("registered", 1), ("registered", 2), ("alias_moved", 1), ("alias_moved", 2)]
    assert registry.pending_events() == [] and publisher.drain() == 0  # marked: nothing sent twice


def test_backoff_doubles_and_is_capped():
    backoff = Backoff(initial_s=0.5, max_s=3.0)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_an_event_left_by_a_crash_is_published_at_the_next_start(tmp_path):
    home = tmp_path / "registry"
    first = Registry(home)
    first.register("m", fitted(), CONTRACT, actor="a")
    first.set_alias("m", "champion", 1, actor="a", reason="go", no_monitoring=True)
    first.close()  # committed, never published: the process died here
    again = Registry(home)
    bus = FlakyBus(failures=0)
    publisher = OutboxPublisher(again, bus.send, poll_s=0.05).start()
    try:
        wait_for(lambda: len(bus.acknowledged) == 2, 10, "the events left in the outbox")
    finally:
        publisher.stop()
        again.close()
    assert [e["action"] for e in bus.acknowledged] == ["registered", "alias_moved"]


def test_a_promotion_answers_at_once_while_the_bus_is_down_and_is_published_after(registry):
    bus = FlakyBus(failures=10**9)  # down until told otherwise
    publisher = OutboxPublisher(registry, bus.send, backoff=Backoff(initial_s=0.01, max_s=0.05), poll_s=0.05)
    registry.listeners.append(publisher.wake)
    publisher.start()
    try:
        served = ServedApp(create_app(registry, TOKEN))
        try:
            client = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            registry.register("m", fitted(), CONTRACT, actor="a")
            response = client.put("/v1/models/m/aliases/champion",
                                  json={"version": 1, "actor": "a", "reason": "go", "no_monitoring": True})
            assert response.status_code == 200, response.text
            assert registry.aliases("m") == {"champion": 1}  # durable before the bus has it
            wait_for(lambda: bus.attempts >= 3, 10, "publishing attempts while the bus is down")
            assert bus.acknowledged == []
            with bus.lock:
                bus.failures = 0  # the broker is back
            wait_for(lambda: len(bus.acknowledged) == 2, 10, "the event after the broker came back")
        finally:
            served.close()
    finally:
        publisher.stop()
    assert [(e["action"], e["alias"]) for e in bus.acknowledged] == [("registered", None), ("alias_moved", "champion")]
    assert registry.pending_events() == []


def test_embedded_predictor_swaps_to_a_champion_moved_through_the_outbox(settings):
    from driftline.entry.embedded import Embedded
    from driftline.topics import FEATURES

    embedded = Embedded(settings)
    try:
        registry = embedded.registry
        registry.register("m", fitted(1.0), CONTRACT, actor="a")
        registry.register("m", fitted(0.01), CONTRACT, actor="a")
        registry.set_alias("m", "champion", 1, actor="a", reason="first", no_monitoring=True)
        producer = embedded.bus.producer()

        def score(event_id: str) -> None:
            event = {"model": "m", "event_id": event_id, "entity_id": "e", "event_time": 0,
                     "numeric_features": {"x": 1.0}, "categorical_features": {}}
            producer.produce(FEATURES, embedded.codec.encode(FEATURES, event), key=b"e")
            producer.flush()
            embedded.pump()

        score("before")
        registry.set_alias("m", "champion", 2, actor="a", reason="second", no_monitoring=True)
        assert len(registry.pending_events()) == 1  # in the outbox until the runners' next turn
        score("after")
        assert registry.pending_events() == []
        versions = dict(embedded.store.query(
            "SELECT event_id, model_version FROM predictions FINAL WHERE role = 'champion'")[1])
        assert versions == {"before": 1, "after": 2}
    finally:
        embedded.close()
