"""The label join is idempotent on (model, event_id): re-sent labels, replays, conflicts, the pending cap.

Logic first (fast, exact), then the service through a runner over the in-process bus
and chDB: a crash after publishing and before committing is simulated by a commit
that never happens, and a restarted joiner replays the same offsets.
"""

from __future__ import annotations

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.runner import Runner
from driftline.services.label_joiner.logic import DUPLICATE_LABEL, PENDING_FULL, LabelJoiner, position
from driftline.services.label_joiner.service import LabelJoinerService
from driftline.topics import ALL_TOPICS, DLQ, LABELED, LABELS, PREDICTIONS


def prediction(event_id, predicted="yes", model="churn"):
    return {"prediction_id": f"{event_id}:1:champion", "event_id": event_id, "entity_id": "u1", "model": model,
            "model_version": 1, "role": "champion", "score": 0.8, "scores": {}, "predicted_label": predicted,
            "numeric_features": {"tenure_days": 12.0}, "categorical_features": {"plan": "pro"},
            "event_time": 1_000, "prediction_time": 1_001}


def label(event_id, truth="yes", label_time=5_000, model="churn"):
    return {"model": model, "event_id": event_id, "label": truth, "value": None, "label_time": label_time}


def no_store(model, ids):
    return {}


# -- logic ---------------------------------------------------------------------------------------

def test_a_resent_label_is_absorbed_and_a_different_one_refused_first_wins():
    joiner = LabelJoiner(no_store)
    first = joiner.process([prediction(f"e{i}") for i in range(20)], [label(f"e{i}") for i in range(20)], 10,
                           label_sources=[position(LABELS, 0, i) for i in range(20)])
    assert len(first.labeled) == 20
    # A client retry: the same labels, stamped later by ingest, at new offsets.
    again = joiner.process([], [label(f"e{i}", label_time=9_000) for i in range(20)], 20,
                           label_sources=[position(LABELS, 0, 100 + i) for i in range(20)])
    assert again.labeled == [] and again.label_rows == [] and again.refused == [] and again.retries == 20
    conflict = joiner.process([], [label("e3", truth="no")], 30, label_sources=[position(LABELS, 0, 200)])
    assert conflict.labeled == [] and conflict.label_rows == []
    assert [(r.category, r.source) for r in conflict.refused] == [(DUPLICATE_LABEL, "labels/0/200")]
    assert "'no' arrived after 'yes'" in conflict.refused[0].reason and "first label wins" in conflict.refused[0].reason


def test_two_labels_for_one_event_in_one_batch_join_once():
    joiner = LabelJoiner(no_store)
    out = joiner.process([prediction("e")], [label("e"), label("e", truth="no")], 0,
                         label_sources=[position(LABELS, 0, 0), position(LABELS, 0, 1)])
    assert [r["label"] for r in out.labeled] == ["yes"]
    assert [r.category for r in out.refused] == [DUPLICATE_LABEL]


def test_a_second_label_for_a_waiting_event_does_not_replace_the_first():
    joiner = LabelJoiner(no_store)
    joiner.process([], [label("e")], 0, label_sources=[position(LABELS, 0, 0)])
    out = joiner.process([], [label("e", truth="no"), label("e", label_time=7_000)], 1,
                         label_sources=[position(LABELS, 0, 1), position(LABELS, 0, 2)])
    assert out.label_rows == [] and out.retries == 1 and [r.category for r in out.refused] == [DUPLICATE_LABEL]
    joined = joiner.process([prediction("e")], [], 2, prediction_sources=[position(PREDICTIONS, 0, 0)])
    assert [(r["label"], r["label_time"]) for r in joined.labeled] == [("yes", 5_000)]


def test_a_replayed_label_is_joined_again_identically():
    joiner = LabelJoiner(no_store)
    first = joiner.process([prediction("e")], [label("e")], 10, label_sources=[position(LABELS, 2, 7)])
    replay = joiner.process([], [label("e")], 99, label_sources=[position(LABELS, 2, 7)])
    assert replay.labeled == first.labeled and replay.replays == 1
    assert [r["status"] for r in replay.label_rows] == ["joined"]


def test_a_replayed_prediction_that_joined_a_waiting_label_publishes_the_same_record():
    joiner = LabelJoiner(no_store)
    joiner.process([], [label("e")], 0, label_sources=[position(LABELS, 0, 0)])
    first = joiner.process([prediction("e")], [], 1, prediction_sources=[position(PREDICTIONS, 1, 4)])
    replay = joiner.process([prediction("e")], [], 2, prediction_sources=[position(PREDICTIONS, 1, 4)])
    assert len(first.labeled) == 1 and replay.labeled == first.labeled
    # The predictor republishing the prediction (another offset) joins nothing again.
    republished = joiner.process([prediction("e")], [], 3, prediction_sources=[position(PREDICTIONS, 1, 9)])
    assert republished.labeled == []


def test_joins_older_than_memory_are_found_in_the_store_one_query_per_model():
    stored = {("churn", "old"): {"event_id": "old", "label": "yes", "value": None, "label_time": 5_000,
                                 "source": "labels/0/1"}}
    queries = []

    def joined_lookup(model, ids):
        queries.append((model, tuple(ids)))
        return {i: stored[(model, i)] for i in ids if (model, i) in stored}

    joiner = LabelJoiner(lambda m, ids: {i: prediction(i, model=m) for i in ids}, joined_lookup=joined_lookup,
                         joined_capacity=1)
    out = joiner.process([], [label("old"), label("new"), label("x", model="fraud")], 0,
                         label_sources=[position(LABELS, 0, 50), position(LABELS, 0, 51), position(LABELS, 1, 52)])
    assert sorted(queries) == [("churn", ("new", "old")), ("fraud", ("x",))]
    assert sorted(r["event_id"] for r in out.labeled) == ["new", "x"] and out.retries == 1


def test_pending_labels_have_a_cap_and_the_overflow_is_refused():
    joiner = LabelJoiner(no_store, max_pending=3)
    out = joiner.process([], [label(f"e{i}") for i in range(5)], 0,
                         label_sources=[position(LABELS, 0, i) for i in range(5)])
    assert len(joiner.pending) == 3 and [r["status"] for r in out.label_rows] == ["pending"] * 3
    assert [(r.category, r.label["event_id"]) for r in out.refused] == [(PENDING_FULL, "e3"), (PENDING_FULL, "e4")]
    assert "pending labels full" in out.refused[0].reason


# -- the service through a runner, over the in-process bus and chDB --------------------------------

class _Dies(Exception):
    pass


def _drain(bus, topic, group):
    consumer = bus.consumer(group, [topic])
    out = []
    while batch := consumer.poll_batch(1000, 0.0):
        out.extend(batch)
    return out


def _runner(bus, codec, store, max_pending=100_000):
    service = LabelJoinerService.over_store(store, label_ttl_ms=3_600_000, now_ms=0, max_pending=max_pending)
    return Runner(service, bus, codec, store, poll_timeout_s=0.0, clock=lambda: 10)


def test_service_resend_crash_replay_conflict_and_overflow(store):
    bus = MemoryBus()
    bus.create_topics({t: 2 for t in ALL_TOPICS})
    codec = Codec(registry_client(None))
    producer = bus.producer()
    for i in range(20):
        producer.produce(PREDICTIONS, codec.encode(PREDICTIONS, prediction(f"e{i}")), key=f"u{i}".encode())
    for i in range(20):
        producer.produce(LABELS, codec.encode(LABELS, label(f"e{i}")), key=f"e{i}".encode())
    runner = _runner(bus, codec, store)
    while runner.step(0.0):
        pass
    # A client re-sends the 20 labels (ingest stamps them later).
    for i in range(20):
        producer.produce(LABELS, codec.encode(LABELS, label(f"e{i}", label_time=8_000)), key=f"e{i}".encode())
    while runner.step(0.0):
        pass
    labeled = [codec.decode(LABELED, m.value) for m in _drain(bus, LABELED, "probe-1")]
    assert sorted(r["event_id"] for r in labeled) == sorted(f"e{i}" for i in range(20))
    assert store.query("SELECT count() FROM labels FINAL WHERE status = 'joined'")[1] == [(20,)]

    # Two more labels arrive; the joiner publishes their `labeled` and dies before committing.
    producer.produce(LABELS, codec.encode(LABELS, label("e20")), key=b"e20")  # no prediction yet: waits
    producer.produce(PREDICTIONS, codec.encode(PREDICTIONS, prediction("e21")), key=b"u21")
    producer.produce(LABELS, codec.encode(LABELS, label("e21")), key=b"e21")
    runner.consumer.commit = lambda offsets: (_ for _ in ()).throw(_Dies())
    try:
        while runner.step(0.0):
            pass
    except _Dies:
        pass
    runner.consumer.close()  # the dead process leaves the group
    restarted = _runner(bus, codec, store)  # same group: reads again from the last commit
    while restarted.step(0.0):
        pass
    after = _drain(bus, LABELED, "probe-2")
    e21 = [m.value for m in after if codec.decode(LABELED, m.value)["event_id"] == "e21"]
    assert len(e21) == 2 and e21[0] == e21[1]  # republished, byte for byte the same
    assert len(after) == 22  # the 20, e21 twice (a replay), e20 not yet (still waiting)
    assert store.query("SELECT event_id, status FROM labels FINAL WHERE status != 'joined'")[1] == [("e20", "pending")]

    # A different label for a joined event, then more waiting labels than the cap allows.
    conflicting = codec.encode(LABELS, label("e5", truth="no"))
    producer.produce(LABELS, conflicting, key=b"e5")
    capped = LabelJoinerService.over_store(store, 3_600_000, 0, max_pending=2)
    restarted.service = capped
    for i in range(30, 33):
        producer.produce(LABELS, codec.encode(LABELS, label(f"e{i}")), key=f"e{i}".encode())
    while restarted.step(0.0):
        pass
    _, rows = store.query("SELECT payload, error FROM dead_letters FINAL ORDER BY error")
    errors = [error for _, error in rows]
    assert len(rows) == 3  # the conflict, and 2 of e30..e32 (e20 already waits: room for one more)
    assert sum(e.startswith("duplicate label for event 'e5'") for e in errors) == 1
    assert sum(e.startswith("pending labels full") for e in errors) == 2
    assert conflicting.hex() in [payload for payload, _ in rows]  # the original bytes (the table keeps them as hex)
    assert len(_drain(bus, DLQ, "probe-3")) == 3
    assert store.query("SELECT label FROM labels FINAL WHERE event_id = 'e5'")[1] == [("yes",)]
