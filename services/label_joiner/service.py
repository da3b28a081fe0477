"""The label-joiner as a runnable service: predictions and labels in, joined labels out."""

from __future__ import annotations

from typing import Any

from driftline.runner import Incoming, Output
from driftline.store import Store
from driftline.topics import LABELED, LABELS, PREDICTIONS
from driftline.services.label_joiner.logic import LabelJoiner

_LOOKUP_SQL = """
SELECT prediction_id, event_id, model_version, role, score, predicted_label, event_time, prediction_time
FROM predictions FINAL
WHERE model = {model:String} AND role = 'champion' AND event_id IN {ids:Array(String)}
"""

_PENDING_SQL = """
SELECT model, event_id, label, value, label_time FROM labels FINAL WHERE status = 'pending'
"""


class LabelJoinerService:
    name = "label-joiner"
    topics = [PREDICTIONS, LABELS]

    def __init__(self, joiner: LabelJoiner):
        self.joiner = joiner

    @classmethod
    def over_store(cls, store: Store, label_ttl_ms: int, now_ms: int) -> LabelJoinerService:
        """A joiner that looks up old predictions in ``store`` and resumes its pending labels."""

        def lookup(model: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
            columns, rows = store.query(_LOOKUP_SQL, {"model": model, "ids": event_ids})
            return {row[1]: dict(zip(columns, row)) for row in rows}

        joiner = LabelJoiner(lookup, label_ttl_ms=label_ttl_ms)
        columns, rows = store.query(_PENDING_SQL)
        joiner.restore_pending([dict(zip(columns, row)) for row in rows], now_ms)
        return cls(joiner)

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        predictions = [item.record for item in batch if item.topic == PREDICTIONS]
        labels = [item.record for item in batch if item.topic == LABELS]
        joined = self.joiner.process(predictions, labels, now_ms)
        out = Output()
        out.add_rows("predictions", joined.prediction_rows)
        out.add_rows("labels", joined.label_rows)
        for record in joined.labeled:
            out.publish(LABELED, record["event_id"], record)
        return out
