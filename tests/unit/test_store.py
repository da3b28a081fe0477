from datetime import datetime, timezone

from driftline.store.ddl import MIGRATIONS

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def prediction(i):
    return {"prediction_id": f"e{i}:1:champion", "event_id": f"e{i}", "entity_id": "c", "model": "m",
            "model_version": 1, "role": "champion", "score": 0.5, "scores": {"1": 0.5}, "predicted_label": "1",
            "numeric_features": {"x": float(i)}, "categorical_features": {"c": "a"}, "event_time": NOW,
            "prediction_time": NOW}


def test_migrations_apply_once(store):
    assert store.migrate() == []
    versions = [v for v, _, _ in MIGRATIONS]
    assert [r[0] for r in store.query("SELECT version FROM schema_migrations ORDER BY version")[1]] == versions


def test_replaying_a_batch_does_not_double_count(store):
    batch = [prediction(i) for i in range(500)]
    store.insert("predictions", batch)
    store.insert("predictions", batch)  # the replay after a crash
    assert store.scalar("SELECT count() FROM predictions") == 1000  # physically twice, before merges
    assert store.scalar("SELECT count() FROM predictions FINAL") == 500  # the documented query


def test_a_joined_label_wins_over_its_pending_row(store):
    base = {"event_id": "e1", "model": "m", "label": "1", "value": None, "label_time": NOW, "reason": "",
            "model_version": 0, "predicted_label": "", "error": None, "event_time": None, "updated_at": NOW}
    store.insert("labels", [{**base, "status": "joined", "status_rank": 2, "model_version": 1, "error": 0.0}])
    store.insert("labels", [{**base, "status": "pending", "status_rank": 0}])  # a replayed earlier state
    assert store.query("SELECT status, model_version FROM labels FINAL")[1] == [("joined", 1)]
