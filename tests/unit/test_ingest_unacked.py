"""Ingest never answers an error for records it may still deliver, and a client retry is harmless.

1. A real Kafka producer whose broker cannot be reached: the request answers 503 within its
   deadline, names every record as in flight, sends Retry-After and dead-letters nothing
   (before: 503 after 60 s, every record dead-lettered although the producer kept it queued).
2. A slow bus (acknowledges nothing until it recovers, then delivers what it held): the client
   retries after the 503, so the topic holds some records twice; the pipeline still counts
   each prediction and each joined label once.
"""

from __future__ import annotations

import json
import socket
import time

from fastapi.testclient import TestClient

from driftline.bus.kafka import KafkaProducer
from driftline.codec import Codec, registry_client
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_RECIPE
from driftline.services.ingest.app import create_app
from driftline.services.ingest.bounds import Bounds
from driftline.services.ingest.gateway import IngestGateway
from driftline.services.ingest.logic import Ingest
from driftline.testing.basket_orders import CONTRACT, MODEL, events, labels, orders
from driftline.training import train


def register(app: Embedded) -> None:
    frame, y = orders(1_000_000, 2000)
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, y)
    version = app.registry.register(MODEL, trained.estimator, CONTRACT, actor="test", reason="first",
                                    recipe=DEFAULT_RECIPE, profile=trained.profile, lineage={"rows": len(frame)})
    app.registry.set_alias(MODEL, "champion", version.version, actor="test", reason="first champion")


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_broker_answers_503_in_flight_within_the_deadline(store):
    producer = KafkaProducer({"bootstrap.servers": f"127.0.0.1:{dead_port()}", "log_level": 0})
    gateway = IngestGateway(Ingest({MODEL: CONTRACT}.get, Bounds(deadline_s=1.0)), producer,
                            Codec(registry_client(None)), store, dlq_producer=producer)
    client = TestClient(create_app(gateway))
    body = labels(0, 10) + [{"model": "no-such-model", "event_id": "x1", "label": "kept"}]
    started = time.monotonic()
    response = client.post("/v1/labels", content=json.dumps(body))
    took = time.monotonic() - started
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    answer = response.json()
    assert [r["index"] for r in answer["in_flight"]] == list(range(10)) and answer["accepted"] == 0
    assert "may still arrive" in answer["in_flight_detail"]
    # The label for a model the registry does not know is refused for itself, and only it is a dead letter.
    assert [(r["index"], r["status"], r["errors"][0]["field"]) for r in answer["rejected"]] == [(10, 422, "model")]
    assert "unknown model 'no-such-model'" in answer["rejected"][0]["errors"][0]["message"]
    assert store.query("SELECT count() FROM dead_letters FINAL WHERE service = 'ingest'")[1] == [(1,)]
    assert took < 30  # the deadline (1 s) plus the dlq copy's share of it, not 2 x 30 s of flushes


class SlowProducer:
    """A bus that takes records but acknowledges none while ``down``; they reach the topic when it
    recovers (like librdkafka's queue delivering after a broker returns)."""

    def __init__(self, inner):
        self.inner, self.down, self.held = inner, True, []

    def produce(self, topic, value, key=None):
        if self.down:
            self.held.append((topic, value, key))
        else:
            self.inner.produce(topic, value, key=key)

    def flush(self, timeout_s=30.0):
        if self.down:
            raise RuntimeError(f"{len(self.held)} records not acknowledged after {timeout_s}s")
        self.inner.flush(timeout_s)

    def recover(self):
        self.down = False
        for topic, value, key in self.held:
            self.inner.produce(topic, value, key=key)
        self.held = []


def test_a_retry_after_an_unacknowledged_request_counts_once_downstream(settings):
    settings = settings.model_copy(update={"ingest_deadline_s": 0.2, "drift_window_by": "count",
                                           "drift_window_size": 100, "drift_min_events": 1})
    app = Embedded(settings)
    try:
        register(app)
        slow = SlowProducer(app.ingest.producer)
        app.ingest.producer = slow
        client = TestClient(create_app(app.ingest))
        first = client.post("/v1/events", content=json.dumps(events(0, 300)))
        assert first.status_code == 503 and len(first.json()["in_flight"]) == 300
        slow.recover()  # the bus comes back and delivers the 300 it held
        retry = client.post("/v1/events", content=json.dumps(events(0, 300)))  # the client retries: 300 more
        assert retry.status_code == 200 and retry.json()["accepted"] == 300
        slow.down = True
        assert client.post("/v1/labels", content=json.dumps(labels(0, 200))).status_code == 503
        slow.recover()
        assert client.post("/v1/labels", content=json.dumps(labels(0, 200))).status_code == 200
        app.pump()
        q = app.store.query
        assert q(f"SELECT count() FROM predictions FINAL WHERE model = '{MODEL}' AND role = 'champion'")[1] == [(300,)]
        assert q(f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'")[1] == [(200,)]
        psi_n = q(f"SELECT sum(n) FROM drift_metrics FINAL WHERE model = '{MODEL}' AND statistic = 'psi' "
                  "AND feature = 'basket_eur'")[1]
        assert psi_n == [(300,)]  # three windows of 100: the 300 republished predictions were not counted
        drift = next(r for r in app.runners if r.service.name == "drift-detector").service.detector
        state = drift._versions[(MODEL, 1)]
        assert state.detector.n_seen == 200 and drift.skipped == {"predictions": 300, "labeled": 0}
        assert max(w.coverage for w in state.coverage.windows()) <= 1.0
        assert q("SELECT count() FROM dead_letters FINAL")[1] == [(0,)]
    finally:
        app.close()


def test_non_finite_label_values_are_refused_per_record(store):
    """A regression label's value must be finite: NaN and ±inf (JSON's NaN / Infinity tokens) are 422."""
    from driftline.bus.memory import MemoryBus
    from driftline.topics import ALL_TOPICS

    bus = MemoryBus()
    bus.create_topics({t: 1 for t in ALL_TOPICS})
    regression = FeatureContract(numeric=("basket_eur",), categorical=(), task="regression")
    gateway = IngestGateway(Ingest({"refund-eur": regression}.get), bus.producer(), Codec(registry_client(None)), store)
    body = b'[{"model": "refund-eur", "event_id": "a", "value": NaN}, ' \
           b'{"model": "refund-eur", "event_id": "b", "value": -Infinity}, ' \
           b'{"model": "refund-eur", "event_id": "c", "value": 12.5}]'
    status, answer = gateway.submit_body("labels", body)
    assert status == 207 and answer["accepted_indexes"] == [2]
    assert [(r["index"], r["status"]) for r in answer["rejected"]] == [(0, 422), (1, 422)]
    assert all("finite" in r["errors"][0]["message"] for r in answer["rejected"])
