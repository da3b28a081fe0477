"""The label-joiner's memory of recent predictions keeps only what a join needs, compactly, and
forgets the oldest first; a joiner that holds every join the store has stops asking the store."""

from __future__ import annotations

import gc
import tracemalloc

from driftline.services.label_joiner.logic import LabelJoiner, position
from driftline.services.label_joiner.recent import Joinable, RecentPredictions
from driftline.topics import LABELS


def _prediction(event_id: str, version: int = 3, model: str = "hull", prediction_id: str | None = None) -> dict:
    return {"prediction_id": prediction_id or f"{event_id}:{version}:champion", "event_id": event_id,
            "entity_id": "vessel-7", "model": model, "model_version": version, "role": "champion",
            "score": 0.25, "scores": {"fouled": 0.25, "clean": 0.75}, "predicted_label": "clean",
            "numeric_features": {f"speed_loss_{i}": float(i) for i in range(12)},
            "categorical_features": {"hull_coating": "silicone", "route": "north-atlantic"},
            "event_time": 1_780_000_000_000, "prediction_time": 1_780_000_000_250}


def _label(event_id: str, truth: str = "clean") -> dict:
    return {"model": "hull", "event_id": event_id, "label": truth, "value": None, "label_time": 1_780_000_900_000}


def test_a_remembered_prediction_comes_back_with_every_field_a_join_needs():
    recent = RecentPredictions(capacity=10)
    odd_id = _prediction("h-2", prediction_id="made-elsewhere-7")  # not the predictor's id form: kept as is
    recent.put([_prediction("h-1"), odd_id])
    found = recent.get_many([("hull", "h-1"), ("hull", "h-2"), ("hull", "never"), ("other", "h-1")])
    assert found == {
        ("hull", "h-1"): Joinable("h-1:3:champion", 3, "champion", 0.25, "clean", 1_780_000_000_000, 1_780_000_000_250),
        ("hull", "h-2"): Joinable("made-elsewhere-7", 3, "champion", 0.25, "clean", 1_780_000_000_000,
                                  1_780_000_000_250)}
    assert all(type(v) in (int, float, str) for joinable in found.values() for v in joinable)


def test_the_oldest_prediction_is_forgotten_first_and_a_replayed_one_is_kept_at_its_newest():
    recent = RecentPredictions(capacity=3)
    recent.put([_prediction("a"), _prediction("b"), _prediction("c")])
    recent.put([_prediction("b", version=4)])  # replayed, newer model version: takes the oldest place ("a")
    recent.put([_prediction("d")])  # takes b's old place, which held nothing live any more
    assert ("hull", "a") not in recent and len(recent) == 3
    assert recent.get_many([("hull", "b")])[("hull", "b")].model_version == 4
    assert ("hull", "c") in recent and ("hull", "d") in recent
    recent.put([_prediction(f"x{i}") for i in range(7)])  # more than fit at once: the newest three stay
    assert {key[1] for key in recent.get_many([("hull", f"x{i}") for i in range(7)])} == {"x4", "x5", "x6"}


def test_a_cached_prediction_takes_under_300_bytes_where_a_record_took_2_kb():
    joiner = LabelJoiner(lambda model, ids: {}, recent_capacity=100_000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, 10_000, 1_000):
            joiner.process([_prediction(f"hull-event-{i:08d}") for i in range(start, start + 1_000)], [], now_ms=0)
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / 10_000
    finally:
        tracemalloc.stop()
    assert per_entry <= 300, per_entry
    out = joiner.process([], [_label("hull-event-00000007", truth="fouled")], now_ms=1)
    assert [(r["prediction_id"], r["error"], r["event_time"]) for r in out.labeled] == [
        ("hull-event-00000007:3:champion", 1.0, 1_780_000_000_000)]


def test_a_joiner_holding_every_join_of_the_store_asks_the_store_no_more_until_it_forgets_one():
    asked: list[list[str]] = []

    def joined_lookup(model, ids):
        asked.append(list(ids))
        return {}

    joiner = LabelJoiner(lambda model, ids: {}, joined_lookup=joined_lookup, joined_capacity=3)
    joiner.process([_prediction("a")], [_label("a")], now_ms=0)
    assert asked == [["a"]]  # nothing said the memory is complete: the store is asked
    joiner.restore_joined([{"model": "hull", "event_id": "old", "label": "clean", "value": None,
                            "label_time": 1_000, "source": position(LABELS, 0, 1)}], all_joins=True)
    out = joiner.process([_prediction("b")], [_label("b"), _label("old", truth="fouled")], now_ms=1)
    assert asked == [["a"]]  # complete: memory alone decides, and still refuses the conflicting label
    assert [r["event_id"] for r in out.labeled] == ["b"] and [r.label["event_id"] for r in out.refused] == ["old"]
    joiner.process([_prediction("c"), _prediction("d")], [_label("c"), _label("d")], now_ms=2)  # "a" forgotten
    joiner.process([_prediction("e")], [_label("e")], now_ms=3)
    assert asked == [["a"], ["e"]]


def test_a_store_holding_more_joins_than_memory_keeps_is_still_asked():
    asked = []
    joiner = LabelJoiner(lambda model, ids: {}, joined_lookup=lambda m, ids: asked.append(ids) or {},
                         joined_capacity=2)
    rows = [{"model": "hull", "event_id": f"j{i}", "label": "clean", "value": None, "label_time": 1_000,
             "source": position(LABELS, 0, i)} for i in range(2)]  # as many as the query's limit: maybe more
    joiner.restore_joined(rows, all_joins=True)
    joiner.process([], [_label("new")], now_ms=0)
    assert asked == [["new"]]


def test_the_service_over_a_store_reads_it_at_its_first_batch_and_after_a_rebalance_only(store):
    from driftline.bus.base import Message
    from driftline.codec import Codec, registry_client
    from driftline.runner import Incoming
    from driftline.services.label_joiner.service import LabelJoinerService
    from driftline.topics import PREDICTIONS

    codec = Codec(registry_client(None))
    offsets = {PREDICTIONS: 0, LABELS: 0}

    def incoming(topic: str, record: dict) -> Incoming:
        value = codec.encode(topic, record)
        offsets[topic] += 1
        message = Message(topic, 0, offsets[topic], record["event_id"].encode(), value, 0)
        return Incoming(topic, codec.decode(topic, value), message)

    asked = []
    query = store.query
    store.query = lambda sql, parameters=None: asked.append(sql) or query(sql, parameters)
    service = LabelJoinerService.over_store(store, label_ttl_ms=60_000, now_ms=0)
    batches = [[incoming(PREDICTIONS, _prediction(f"h{b}-{i}")) for i in range(20)]
               + [incoming(LABELS, _label(f"h{b}-{i}")) for i in range(20)] for b in range(3)]
    out = service.handle(batches[0], now_ms=1)
    startup = len(asked)
    assert startup > 0 and len(out.records) == 20
    for batch in batches[1:]:
        assert len(service.handle(batch, now_ms=2).records) == 20
    assert len(asked) == startup  # memory holds every join and prediction of the store: nothing asked
    service.on_assignment(now_ms=3)  # partitions moved: read the store again
    assert len(asked) > startup
    retry = service.handle([incoming(LABELS, _label("h0-3"))], now_ms=4)  # the same label again: absorbed
    assert retry.records == [] and "labels" not in retry.rows


def test_after_a_rebalance_onto_a_store_holding_more_than_memory_the_store_is_asked_again(store):
    """Found at review: a joiner that once held every prediction of the store kept believing so
    after a rebalance onto a store holding more than memory keeps, and a label whose prediction
    the previous owner had logged waited as pending instead of joining."""
    from driftline.bus.base import Message
    from driftline.codec import Codec, registry_client
    from driftline.runner import Incoming
    from driftline.services.label_joiner.service import LabelJoinerService
    from driftline.topics import PREDICTIONS

    codec = Codec(registry_client(None))

    def incoming(topic: str, record: dict, offset: int) -> Incoming:
        value = codec.encode(topic, record)
        return Incoming(topic, codec.decode(topic, value), Message(topic, 0, offset, None, value, 0))

    service = LabelJoinerService.over_store(store, label_ttl_ms=60_000, now_ms=0)
    service.handle([incoming(PREDICTIONS, _prediction("mine-0"), 0)], now_ms=1)  # memory: all the store has
    previous_owner = LabelJoinerService.over_store(store, label_ttl_ms=60_000, now_ms=0)
    logged = previous_owner.handle([incoming(PREDICTIONS, _prediction(f"theirs-{i}"), i) for i in range(8)], now_ms=2)
    for table, rows in logged.rows.items():
        store.insert(table, rows)
    service.joiner.recent_capacity = 4  # the store now holds more predictions than memory keeps
    service.on_assignment(now_ms=3)
    out = service.handle([incoming(LABELS, _label("theirs-5"), 0)], now_ms=4)
    assert [record["event_id"] for _, _, record in out.records] == ["theirs-5"]  # joined with the store's prediction
