"""One valid record of every topic, with epoch-ms times: what the codec tests write and read back."""

from __future__ import annotations

from typing import Any

T = 1_767_225_600_123

#: topic -> a record of that topic's schema, every field set (times as epoch-ms ints).
SAMPLES: dict[str, dict[str, Any]] = {
    "features": {"model": "credit", "event_id": "e1", "entity_id": "c1", "event_time": T,
                 "numeric_features": {"income": 5e4}, "categorical_features": {"region": "north"}},
    "predictions": {"prediction_id": "e1:1:champion", "event_id": "e1", "entity_id": "c1", "model": "credit",
                    "model_version": 1, "role": "champion", "score": 0.25, "scores": {"0": 0.75, "1": 0.25},
                    "predicted_label": "0", "numeric_features": {"income": 5e4},
                    "categorical_features": {"region": "north"}, "event_time": T, "prediction_time": T + 5},
    "labels": {"model": "credit", "event_id": "e1", "label": "1", "value": None, "label_time": T + 9},
    "labeled": {"prediction_id": "e1:1:champion", "event_id": "e1", "model": "credit", "model_version": 1,
                "role": "champion", "score": 0.25, "predicted_label": "0", "label": "1", "value": None,
                "error": 1.0, "event_time": T, "prediction_time": T + 5, "label_time": T + 9},
    "drift": {"model": "credit", "model_version": 1, "kind": "data", "feature": "income", "statistic": "psi",
              "value": 0.31, "band": "act", "window_start": 0, "window_end": 10, "n": 10, "detected_at": T, "threshold": 0.25,
              "threshold_mode": "fixed", "event_time": None, "partition": None, "offset": None, "stream_index": None},
    "retrain": {"request_id": "r1", "model": "credit", "model_version": 1, "reason": "psi", "signals": [
        {"kind": "data", "feature": "income", "statistic": "psi", "value": 0.3, "window_start": 0, "window_end": 1}],
        "window_start": T, "window_end": T + 1, "requested_at": T + 2, "incident_id": "r1", "attempt": 1,
        "min_rows": 3000},
    "models": {"model": "credit", "version": 2, "action": "alias_moved", "alias": "champion", "previous_version": 1,
               "sha256": "ab" * 32, "actor": "retrainer", "reason": "won", "occurred_at": T, "request_id": "r1"},
    "dlq": {"dead_letter_id": "d1", "service": "ingest", "topic": "/v1/events", "partition": None, "offset": None,
            "key": None, "payload": b"\x00not json", "error": "bad", "received_at": T},
}
