from driftline.services.label_joiner.logic import LabelJoiner


def prediction(event_id, predicted="1"):
    return {"prediction_id": f"{event_id}:1:champion", "event_id": event_id, "entity_id": "c", "model": "m",
            "model_version": 1, "role": "champion", "score": 0.9, "scores": {}, "predicted_label": predicted,
            "numeric_features": {}, "categorical_features": {}, "event_time": 1000, "prediction_time": 1001}


def label(event_id, value="1"):
    return {"model": "m", "event_id": event_id, "label": value, "value": None, "label_time": 5000}


def test_a_late_label_joins_from_the_cache_or_the_store():
    store = {"old": prediction("old", predicted="0")}
    joiner = LabelJoiner(lambda model, ids: {i: store[i] for i in ids if i in store}, recent_capacity=1)
    joiner.process([prediction("a"), prediction("b")], [], now_ms=0)  # "a" falls out of the cache
    out = joiner.process([], [label("b"), label("old")], now_ms=10)
    assert {(r["event_id"], r["error"]) for r in out.labeled} == {("b", 0.0), ("old", 1.0)}
    assert {r["status"] for r in out.label_rows} == {"joined"}


def test_an_early_label_waits_for_its_prediction():
    joiner = LabelJoiner(lambda model, ids: {}, label_ttl_ms=1000)
    out = joiner.process([], [label("e")], now_ms=0)
    assert out.labeled == [] and [r["status"] for r in out.label_rows] == ["pending"]
    out = joiner.process([prediction("e")], [], now_ms=500)
    assert [r["event_id"] for r in out.labeled] == ["e"]
    assert [r["status"] for r in out.label_rows] == ["joined"]


def test_a_label_that_never_matches_is_logged_with_the_reason():
    joiner = LabelJoiner(lambda model, ids: {}, label_ttl_ms=1000)
    joiner.process([], [label("ghost")], now_ms=0)
    out = joiner.process([], [], now_ms=1000)
    assert [r["status"] for r in out.label_rows] == ["unmatched"]
    assert "within 1000 ms" in out.label_rows[0]["reason"]
    assert joiner.pending == {}


def test_shadow_predictions_are_logged_but_not_joined():
    joiner = LabelJoiner(lambda model, ids: {})
    shadow = {**prediction("s"), "role": "shadow", "prediction_id": "s:2:shadow"}
    out = joiner.process([shadow], [label("s")], now_ms=0)
    assert len(out.prediction_rows) == 1 and out.labeled == []
