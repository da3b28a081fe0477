"""The label-joiner as a runnable service: predictions and labels in, joined labels out.

Each (model, event_id) is joined once (see :mod:`driftline.services.label_joiner.logic`):
a second label for a joined or waiting event is absorbed when it says the same
(a client retry) and dead-lettered as a ``duplicate label`` when it says something
else; a label beyond ``max_pending`` waiting ones is dead-lettered as ``pending
labels full``. Both keep the record's original bytes and bus position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from driftline.deadletter import dead_letter
from driftline.runner import Incoming, Output
from driftline.store import Store
from driftline.topics import LABELED, LABELS, PREDICTIONS
from driftline.services.label_joiner.logic import DUPLICATE_LABEL, LabelJoiner, position

SERVICE = "label-joiner"

SECOND_LABELS = Counter(
    "driftline_second_labels", "Labels for an event already joined or waiting, by outcome: retry (same label, "
    "absorbed), conflict (different label, dead-lettered; the first wins), replay (the same bus record again, "
    "joined again identically).", ["outcome"])

_LOOKUP_SQL = """
SELECT prediction_id, event_id, model_version, role, score, predicted_label, event_time, prediction_time
FROM predictions FINAL
WHERE model = {model:String} AND role = 'champion' AND event_id IN {ids:Array(String)}
"""

_JOINED_SQL = """
SELECT event_id, label, value, label_time, source FROM labels FINAL
WHERE model = {model:String} AND event_id IN {ids:Array(String)} AND status = 'joined'
"""

_PENDING_SQL = """
SELECT model, event_id, label, value, label_time, source FROM labels FINAL WHERE status = 'pending'
"""

#: The newest joins, so a replay of the records that made them is recognised after a restart.
_RECENT_JOINS_SQL = """
SELECT model, event_id, label, value, label_time, source FROM labels FINAL
WHERE status = 'joined' ORDER BY updated_at DESC LIMIT {n:UInt64}
"""


#: Champion predictions, for a joiner to hold them all when they fit in its memory.
_CHAMPIONS_COUNT_SQL = "SELECT count() FROM predictions WHERE role = 'champion'"
_CHAMPIONS_SQL = """
SELECT prediction_id, event_id, model, model_version, role, score, predicted_label, event_time, prediction_time
FROM predictions FINAL WHERE role = 'champion' ORDER BY prediction_time
"""


class LabelJoinerService:
    name = SERVICE
    topics = [PREDICTIONS, LABELS]

    def __init__(self, joiner: LabelJoiner, pending_in_store: Callable[[], list[dict[str, Any]]] | None = None,
                 joins_in_store: Callable[[], list[dict[str, Any]]] | None = None,
                 predictions_in_store: Callable[[], list[dict[str, Any]] | None] | None = None):
        self.joiner = joiner
        self.pending_in_store = pending_in_store
        self.joins_in_store = joins_in_store
        self.predictions_in_store = predictions_in_store
        self._memory_loaded = joins_in_store is None and predictions_in_store is None

    def on_assignment(self, now_ms: int) -> None:
        """Partitions moved to this instance (another one joined or left the group): labels that
        wait there were kept in the memory of the instance that read them. They are all in the
        store as ``pending``; adopting them here lets a prediction arriving on a partition that
        moved meet its label. (A copy still held elsewhere may expire as ``unmatched``; the
        store keeps ``joined``, the higher status.)"""
        if self.pending_in_store is not None:
            self.joiner.restore_pending(self.pending_in_store(), now_ms)
        self._load_memory()

    def _load_memory(self) -> None:
        """The store's newest joins and champion predictions, once this instance owns its partitions
        (its first batch) and after every rebalance: the previous owners' rows are written by then,
        so a joiner that holds them all checks new labels in memory instead of asking the store
        every batch (a store holding more than memory keeps is still asked)."""
        if self.joins_in_store is not None:
            self.joiner.restore_joined(self.joins_in_store(), all_joins=True)
        if self.predictions_in_store is not None:
            predictions = self.predictions_in_store()  # None: more than memory keeps, so the store is asked
            self.joiner.restore_predictions(predictions or [], all_predictions=predictions is not None)
        self._memory_loaded = True

    @classmethod
    def over_store(cls, store: Store, label_ttl_ms: int, now_ms: int, max_pending: int = 100_000,
                   joined_capacity: int = 200_000) -> LabelJoinerService:
        """A joiner that looks up old predictions and joins in ``store`` and resumes its pending labels."""

        def lookup(model: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
            columns, rows = store.query(_LOOKUP_SQL, {"model": model, "ids": event_ids})
            return {row[1]: dict(zip(columns, row)) for row in rows}

        def joined_lookup(model: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
            columns, rows = store.query(_JOINED_SQL, {"model": model, "ids": event_ids})
            return {row[0]: dict(zip(columns, row)) for row in rows}

        def pending_in_store() -> list[dict[str, Any]]:
            columns, rows = store.query(_PENDING_SQL)
            return [dict(zip(columns, row)) for row in rows]

        joiner = LabelJoiner(lookup, label_ttl_ms=label_ttl_ms, joined_lookup=joined_lookup,
                             joined_capacity=joined_capacity, max_pending=max_pending)
        def joins_in_store() -> list[dict[str, Any]]:
            columns, rows = store.query(_RECENT_JOINS_SQL, {"n": joined_capacity})
            return [dict(zip(columns, row)) for row in reversed(rows)]

        def predictions_in_store() -> list[dict[str, Any]] | None:
            """All champion predictions, oldest first, or None when there are more than memory keeps."""
            if store.scalar(_CHAMPIONS_COUNT_SQL) >= joiner.recent_capacity:  # counts replays too: a bound
                return None
            columns, rows = store.query(_CHAMPIONS_SQL)
            return [dict(zip(columns, row)) for row in rows]

        joiner.restore_pending(pending_in_store(), now_ms)
        return cls(joiner, pending_in_store, joins_in_store, predictions_in_store)

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        if not self._memory_loaded:
            self._load_memory()
        predictions = [item for item in batch if item.topic == PREDICTIONS]
        labels = [item for item in batch if item.topic == LABELS]
        label_sources = [_position(i) for i in labels]
        joined = self.joiner.process([i.record for i in predictions], [i.record for i in labels], now_ms,
                                     prediction_sources=[_position(i) for i in predictions],
                                     label_sources=label_sources)
        sources = dict(zip(label_sources, labels)) if joined.refused else {}
        out = Output()
        out.add_columns("predictions", joined.prediction_columns)
        out.add_columns("labels", joined.label_columns)
        for record in joined.labeled:
            out.publish(LABELED, record["event_id"], record)
        for refused in joined.refused:
            message = sources[refused.source].message
            out.dead(dead_letter(SERVICE, message.topic, message.value, refused.reason, partition=message.partition,
                                 offset=message.offset, key=message.key), reason=refused.category)
        SECOND_LABELS.labels("retry").inc(joined.retries)
        SECOND_LABELS.labels("replay").inc(joined.replays)
        SECOND_LABELS.labels("conflict").inc(sum(r.category == DUPLICATE_LABEL for r in joined.refused))
        return out


def _position(item: Incoming) -> str:
    message = item.message
    return position(message.topic, message.partition, message.offset)
