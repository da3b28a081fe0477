"""Ingest over a real HTTP port: the cases that used to lose records, and the bounds and duplicate policy.

Each test talks to uvicorn on a free 127.0.0.1 port, the way a producer would,
and then looks at what reached the features topic and what is in ``dead_letters``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from driftline.entry.demo import feature_events, train_first_model
from driftline.entry.embedded import Embedded
from driftline.testing.served import ServedApp
from driftline.entry.scenario import CreditScenario
from driftline.services.ingest.app import create_app
from driftline.timeutil import now_ms
from driftline.topics import FEATURES

EVENTS = feature_events(CreditScenario().generate(0, 200))


class Served:
    """An embedded app whose ingest listens on a real port, and a probe on the features topic."""

    def __init__(self, settings, token: str | None = None):
        self.app = Embedded(settings)
        train_first_model(self.app, CreditScenario(), rows=1500)
        self.features = self.app.bus.consumer("probe", [FEATURES])
        self.served = ServedApp(create_app(self.app.ingest, token=token))
        self.url = self.served.url
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def post(self, body: bytes, route: str = "/v1/events", headers: dict | None = None, **kwargs) -> httpx.Response:
        return self.client.post(route, content=body, headers={"Content-Type": "application/json", **(headers or {})},
                                **kwargs)

    def published(self) -> list[str]:
        out = []
        while batch := self.features.poll_batch(1000, 0.0):
            out.extend(self.app.codec.decode(FEATURES, m.value)["event_id"] for m in batch)
        return out

    def dead_letters(self) -> list[tuple[bytes, str]]:
        _, rows = self.app.store.query("SELECT hex(payload), error FROM dead_letters FINAL ORDER BY received_at")
        return [(bytes.fromhex(p), e) for p, e in rows]

    def close(self) -> None:
        self.client.close()
        self.served.close()
        self.app.close()


@pytest.fixture
def served(settings):
    s = Served(settings)
    yield s
    s.close()


def record(i: int, **changes) -> bytes:
    return json.dumps({**EVENTS[i], **changes}).encode()


def batch(*records: bytes) -> bytes:
    return b"[" + b", ".join(records) + b"]"


def test_a_huge_event_time_rejects_that_record_and_publishes_the_others(served):
    bad = record(1, event_time=2**70)
    response = served.post(batch(record(0), bad, record(2)))
    assert response.status_code == 207
    answer = response.json()
    assert answer["accepted"] == 2 and answer["accepted_indexes"] == [0, 2]
    (rejected,) = answer["rejected"]
    assert rejected["index"] == 1 and rejected["status"] == 422 and rejected["errors"][0]["field"] == "event_time"
    assert sorted(served.published()) == [EVENTS[0]["event_id"], EVENTS[2]["event_id"]]
    assert served.dead_letters() == [(bad, "event_time: integer outside 64 bits")]


def test_a_lone_surrogate_in_an_id_is_that_records_rejection(served):
    bad = record(4, event_id="X").replace(b'"X"', b'"\\ud800"')
    response = served.post(batch(record(3), bad, record(5)))
    assert response.status_code == 207 and response.json()["accepted_indexes"] == [0, 2]
    assert "UTF-8" in response.json()["rejected"][0]["errors"][0]["message"]
    assert len(served.published()) == 2
    assert [p for p, _ in served.dead_letters()] == [bad]


def test_a_body_nested_10000_deep_is_answered_and_kept(served):
    deep = b"[" * 10_000 + b"]" * 10_000
    response = served.post(deep)  # a batch whose one record nests 9,999 deep
    assert response.status_code == 422
    assert response.json()["rejected"][0]["index"] == 0
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    assert served.post(deep_object).status_code == 422
    unclosed = b"[" * 10_000
    assert served.post(unclosed).status_code == 400
    assert served.published() == []
    assert [p for p, _ in served.dead_letters()] == [deep[1:-1], deep_object, unclosed]


def test_rejected_bytes_are_kept_as_sent_and_never_collapsed(served):
    spelled = record(7, entity_id=5).replace(b'"income": ', b'"income": 1E12, "zz": ', 1)
    body = batch(spelled)
    assert served.post(body).status_code == 422
    assert served.post(body).status_code == 422
    kept = served.dead_letters()
    assert [p for p, _ in kept] == [spelled, spelled]  # two rows under FINAL, 1E12 as sent
    assert b'"income": 1E12' in kept[0][0]


def test_a_full_bus_refuses_records_with_503_and_keeps_them(served):
    served.app.bus.retention_bytes, served.app.bus.max_lag_bytes = 0, 6_000  # a few events per partition
    records = [record(i) for i in range(10, 90)]
    response = served.post(batch(*records))
    answer = response.json()
    assert response.status_code == 207, answer
    published = served.published()
    assert 0 < answer["accepted"] == len(published) < 80
    assert sorted(published) == sorted(EVENTS[10 + i]["event_id"] for i in answer["accepted_indexes"])
    refused = answer["rejected"]
    assert len(refused) == 80 - answer["accepted"] and {r["status"] for r in refused} == {503}
    assert sorted(p for p, _ in served.dead_letters()) == sorted(records[r["index"]] for r in refused)
    # Nothing fits now: the whole request is refused and the client told when to retry.
    again = served.post(batch(record(95)))
    assert again.status_code == 503 and again.headers["Retry-After"] == "1"
    assert served.published() == []


def test_a_body_over_the_limit_is_refused_unread_and_not_stored(settings):
    served = Served(settings.model_copy(update={"ingest_max_body_bytes": 4096}))
    try:
        big = batch(*[record(i) for i in range(20)])
        assert len(big) > 4096
        assert served.post(big).status_code == 413
        chunked = served.client.post("/v1/events", content=iter([big[:3000], big[3000:]]))  # no Content-Length
        assert chunked.status_code == 413
        assert served.published() == [] and served.dead_letters() == []
        assert served.post(batch(record(0))).status_code == 200
    finally:
        served.close()


def test_duplicate_event_ids_first_wins_and_retries_are_idempotent(served):
    first = record(20)
    later = record(21, event_id=EVENTS[20]["event_id"])
    third = record(22, event_id=EVENTS[20]["event_id"])
    response = served.post(batch(first, later, third))
    answer = response.json()
    assert response.status_code == 207 and answer["accepted_indexes"] == [0]
    assert [(r["index"], r["status"]) for r in answer["rejected"]] == [(1, 409), (2, 409)]
    assert "first wins" in answer["rejected"][0]["errors"][0]["message"]
    assert served.published() == [EVENTS[20]["event_id"]]
    assert sorted(p for p, _ in served.dead_letters()) == sorted([later, third])

    # A client retry (even spelled differently) is answered as accepted, published once only.
    respelled = json.dumps(json.loads(first), indent=2, sort_keys=True).encode()
    retry = served.post(batch(respelled, record(23)))
    assert retry.status_code == 200
    assert retry.json()["already_accepted"] == [{"index": 0, "event_id": EVENTS[20]["event_id"]}]
    assert retry.json()["accepted_indexes"] == [1]
    assert served.published() == [EVENTS[23]["event_id"]]
    # Against a later request, a different record with an accepted id is still a duplicate.
    assert served.post(batch(later)).status_code == 422
    assert len(served.dead_letters()) == 3


def test_concurrent_requests_cannot_both_win_an_event_id(served):
    contenders = [batch(record(30 + i, event_id="contested")) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = [r.json() for r in pool.map(served.post, contenders)]
    assert sum(a["accepted"] for a in answers) == 1
    assert served.published() == ["contested"]
    assert len(served.dead_letters()) == 7


def test_event_times_outside_the_window_are_rejected_before_anyone_is_told_they_are_fine(served):
    now = now_ms()
    response = served.post(batch(record(40, event_time=10**17), record(41, event_time=now + 2 * 86_400_000),
                                 record(42, event_time=now - 3600_000), record(43, event_time="2026-01-01T00:00:00Z")))
    answer = response.json()
    assert response.status_code == 207 and answer["accepted_indexes"] == [2, 3]
    assert [r["errors"][0]["field"] for r in answer["rejected"]] == ["event_time", "event_time"]
    assert len(served.published()) == 2


def test_with_a_token_configured_a_post_needs_it_and_nothing_unauthenticated_is_stored(settings):
    served = Served(settings, token="s3cret-ingest-token")
    try:
        body = batch(record(0), record(1))
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
            response = served.post(body, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert served.published() == [] and served.dead_letters() == []
        assert served.client.get("/healthz").status_code == 200
        response = served.post(body, headers={"Authorization": "Bearer s3cret-ingest-token"})
        assert response.status_code == 200 and response.json()["accepted"] == 2
        assert sorted(served.published()) == sorted(e["event_id"] for e in EVENTS[:2])
    finally:
        served.close()
