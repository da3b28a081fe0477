"""Label-joiner: match each label with its champion prediction, however late or early it arrives,
and join each (model, event_id) once.

- A label that arrives after its prediction (seconds or hours later) is joined
  from a bounded cache of recent predictions or, failing that, from the store
  (``lookup``), so lateness is bounded only by what the store keeps.
- A label that arrives before its prediction waits in ``pending`` until the
  prediction comes or ``label_ttl_ms`` passes; then it is logged as unmatched
  with the reason. Pending labels are also written to the store, so a restarted
  joiner picks them up again (:meth:`LabelJoiner.restore_pending`). At most
  ``max_pending`` labels wait; a label beyond that is refused ("pending labels
  full") for the service to dead-letter with its bytes.

Idempotent on (model, event_id): the first label joined for an event is the
event's label. The joiner knows what it joined from a bounded memory of recent
joins and, for older ones, the store (``joined_lookup``: ``labels FINAL WHERE
status = 'joined'``, one query per model per batch). While memory holds every
join and every champion prediction the store has (:meth:`LabelJoiner.restore_joined`,
:meth:`LabelJoiner.restore_predictions` with nothing forgotten since), the store is
not asked: what memory does not hold, the store does not either. What arrives again
for a joined event:

- **the same bus record again** (a replay: the joiner died after publishing
  ``labeled`` and before committing its offsets) is joined again *identically*:
  the same ``labeled`` record and label row, which its consumers count once.
  A replay is told apart from a re-send by the record's bus position
  (topic/partition/offset), kept with each join (the label row's ``source``);
- **another label with the same class or value** (a client retry) is absorbed:
  no row, no ``labeled``; counted in :attr:`JoinOutput.retries`;
- **another label with a different class or value** is refused as a
  ``"duplicate label"`` (the first wins: by then the first may be counted in
  the error stream, and a second ``labeled`` would count the event twice). The
  service dead-letters it with its bytes, so the conflict is visible.

The same holds for a label still pending: the first waits, a second is absorbed
or refused.

Pure logic: the runner supplies ``lookup`` and ``joined_lookup`` and does the I/O.
Store rows come out column-wise (:class:`~driftline.store.ColumnBatch`, times in epoch
ms); recent predictions are kept compactly (:mod:`.recent`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from driftline.store.column_batch import ColumnBatch
from driftline.timeutil import to_ms
from driftline.services.label_joiner.recent import Joinable, RecentPredictions

STATUS_RANK = {"pending": 0, "unmatched": 1, "joined": 2}

#: (model, event_ids) -> {event_id: the champion prediction fields a join needs}.
Lookup = Callable[[str, list[str]], dict[str, dict[str, Any]]]
#: (model, event_ids) -> {event_id: the joined label row: label, value, label_time, source}.
JoinedLookup = Callable[[str, list[str]], dict[str, dict[str, Any]]]

Key = tuple[str, str]  # (model, event_id)

#: Reasons a label is refused (dead-lettered by the service), as metric categories.
DUPLICATE_LABEL = "duplicate_label"
PENDING_FULL = "pending_full"

#: The ``predictions`` table's columns, as the fields of a Prediction record.
PREDICTION_COLUMNS = ("prediction_id", "event_id", "entity_id", "model", "model_version", "role", "score", "scores",
                      "predicted_label", "numeric_features", "categorical_features", "event_time", "prediction_time")
_TIME_COLUMNS = ("event_time", "prediction_time")
#: The ``labels`` table's columns, in the order :class:`_LabelRows` appends them.
LABEL_COLUMNS = ("event_id", "model", "label", "value", "label_time", "status", "status_rank", "reason",
                 "model_version", "predicted_label", "error", "event_time", "updated_at", "source")


def position(topic: str, partition: int, offset: int) -> str:
    """Where a record sits on the bus, as kept in a label row's ``source``: ``topic/partition/offset``."""
    return f"{topic}/{partition}/{offset}"


@dataclass(frozen=True)
class Refused:
    """A label the joiner will not take: the service dead-letters it with its bytes."""

    label: dict[str, Any]
    source: str | None  # its bus position (None when the caller gave none)
    reason: str
    category: str  # DUPLICATE_LABEL or PENDING_FULL


def _empty_predictions() -> ColumnBatch:
    return ColumnBatch({name: [] for name in PREDICTION_COLUMNS})


def _empty_labels() -> ColumnBatch:
    return ColumnBatch({name: [] for name in LABEL_COLUMNS})


@dataclass
class JoinOutput:
    """A batch's result. Store rows come column-wise (times in epoch ms), ready for one insert per table."""

    prediction_columns: ColumnBatch = field(default_factory=_empty_predictions)
    label_columns: ColumnBatch = field(default_factory=_empty_labels)
    labeled: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    retries: int = 0  # labels equal to one joined (or pending) before: absorbed
    replays: int = 0  # records seen again at the position that joined them: joined again identically

    @property
    def prediction_rows(self) -> list[dict[str, Any]]:
        """The ``predictions`` rows, one dict each."""
        return self.prediction_columns.rows()

    @property
    def label_rows(self) -> list[dict[str, Any]]:
        """The ``labels`` rows, one dict each."""
        return self.label_columns.rows()


class _Joined(NamedTuple):
    """The label that joined an event (its time in ms) and where the record that joined it sits."""

    label: str
    value: float | None
    label_time: int
    source: str  # bus position of the record whose handling made the join

    def as_label(self, key: Key) -> dict[str, Any]:
        return {"model": key[0], "event_id": key[1], "label": self.label, "value": self.value,
                "label_time": self.label_time}


_new_joined = partial(tuple.__new__, _Joined)  # a _Joined from a tuple without NamedTuple's Python-level __new__


class _LabelRows:
    """``labels`` rows appended one by one as tuples, turned into columns once (no dict per row)."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def append(self, label: dict[str, Any], status: str, reason: str, now_ms: int, source: str,
               model_version: int = 0, predicted_label: str = "", error: float | None = None,
               event_time: int | None = None) -> None:
        self._rows.append((label["event_id"], label["model"], label["label"], label.get("value"),
                           to_ms(label["label_time"]), status, STATUS_RANK[status], reason, model_version,
                           predicted_label, error, event_time, now_ms, source))

    def add(self, row: tuple) -> None:
        """A row already in :data:`LABEL_COLUMNS` order (times in ms)."""
        self._rows.append(row)

    def batch(self) -> ColumnBatch:
        if not self._rows:
            return _empty_labels()
        return ColumnBatch(dict(zip(LABEL_COLUMNS, map(list, zip(*self._rows)))))


def prediction_columns(predictions: list[dict[str, Any]]) -> ColumnBatch:
    """Prediction records as ``predictions`` columns (times in epoch ms)."""
    if not predictions:
        return _empty_predictions()
    columns = dict(zip(PREDICTION_COLUMNS, map(list, zip(*map(itemgetter(*PREDICTION_COLUMNS), predictions)))))
    for name in _TIME_COLUMNS:
        values = columns[name]
        if not all(type(v) is int for v in values):
            columns[name] = [to_ms(v) for v in values]
    return ColumnBatch(columns)


def misclassification(prediction: Joinable, label: dict[str, Any]) -> float:
    """The error stream's element: 0/1 misclassification for a classifier (two classes or more:
    the predicted class against the true one), absolute error ``|value - score|`` for a regressor.

    Ingest gives a label a ``value`` only when its model's contract says ``regression``,
    so the label alone says which applies, also for labels joined from the store.
    """
    if label.get("value") is not None:
        return abs(float(label["value"]) - prediction.score)
    return 0.0 if prediction.predicted_label == label["label"] else 1.0


def _same_truth(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two labels saying the same thing about an event (their label times may differ: ingest
    stamps a label without one when it arrives, so a client retry gets a later time)."""
    value_a, value_b = a.get("value"), b.get("value")
    same_value = (value_a is None and value_b is None) or (
        value_a is not None and value_b is not None and float(value_a) == float(value_b))
    return str(a["label"]) == str(b["label"]) and same_value


class LabelJoiner:
    """
    Parameters
    ----------
    lookup
        Finds champion predictions no longer in the cache: ``(model, event_ids) -> {event_id: prediction}``.
    label_ttl_ms
        How long an early label waits for its prediction before it is logged as unmatched.
    recent_capacity
        Champion predictions kept in memory for fast joins (only the fields a join needs:
        :class:`~driftline.services.label_joiner.recent.RecentPredictions`).
    joined_lookup
        Finds labels joined earlier and no longer remembered: ``(model, event_ids) -> {event_id: row}``
        (``label``, ``value``, ``label_time``, ``source``). None: only the joins remembered count.
    joined_capacity
        Recent joins kept in memory (older ones are asked of ``joined_lookup``).
    max_pending
        Most labels waiting for their prediction; a label beyond is refused as ``"pending labels full"``.
    """

    def __init__(self, lookup: Lookup, label_ttl_ms: int = 3_600_000, recent_capacity: int = 200_000,
                 joined_lookup: JoinedLookup | None = None, joined_capacity: int = 200_000,
                 max_pending: int = 100_000):
        self.lookup = lookup
        self.joined_lookup = joined_lookup
        self.label_ttl_ms = label_ttl_ms
        self.recent_capacity = recent_capacity
        self.joined_capacity = joined_capacity
        self.max_pending = max_pending
        self._recent = RecentPredictions(recent_capacity)
        self._joined: OrderedDict[Key, _Joined] = OrderedDict()
        # True while every join the store holds for this instance's events is also in _joined
        # (:meth:`restore_joined` with ``all_joins``, nothing forgotten since): the store need not be asked.
        self._joined_complete = False
        self._joins_forgotten = 0
        # The same for champion predictions and ``lookup`` (:meth:`restore_predictions`).
        self._predictions_complete = False
        self._predictions_forgotten = 0
        self.pending: dict[Key, tuple[dict[str, Any], int, str]] = {}  # key -> (label, deadline ms, source)

    def process(self, predictions: list[dict[str, Any]], labels: list[dict[str, Any]], now_ms: int,
                prediction_sources: list[str] | None = None, label_sources: list[str] | None = None) -> JoinOutput:
        """Join a batch. ``*_sources`` are the records' bus positions (:func:`position`), in order;
        without them every record counts as new to the bus (no replay is recognised)."""
        out = JoinOutput(prediction_columns=prediction_columns(predictions))
        rows = _LabelRows()
        prediction_sources = prediction_sources or [None] * len(predictions)
        label_sources = label_sources or [None] * len(labels)
        roles = out.prediction_columns.columns["role"]
        champion_rows = [i for i, role in enumerate(roles) if role == "champion"]
        self._recent.put_columns(out.prediction_columns.columns,
                                 None if len(champion_rows) == len(roles) else champion_rows)
        champions = [(predictions[i], prediction_sources[i]) for i in champion_rows]
        joined, pending = self._joined, self.pending
        if pending or joined:
            for p, source in champions:
                key = (p["model"], p["event_id"])
                waiting = pending.pop(key, None)
                if waiting is not None:
                    self._join(out, rows, waiting[0], Joinable.of(p), now_ms, source or "")
                elif source is not None and (done := joined.get(key)) is not None and done.source == source:
                    # The prediction that joined this label, replayed: the same join, the same record.
                    out.replays += 1
                    self._join(out, rows, done.as_label(key), Joinable.of(p), now_ms, source)
        keys = [(label["model"], label["event_id"]) for label in labels]
        self._load_joined([key for key in keys if key not in joined and key not in pending])
        known = self._recent.get_many(keys)
        wanted = [key for key, source in zip(keys, label_sources)
                  if key not in known and key not in pending
                  and ((done := joined.get(key)) is None or (source is not None and done.source == source))]
        if self._recent.forgotten != self._predictions_forgotten:
            self._predictions_complete = False  # the store holds predictions memory does not any more
        if not self._predictions_complete:
            known.update(self._find_predictions(wanted))
        for label, key, source in zip(labels, keys, label_sources):
            self._label(out, rows, label, key, source, known, now_ms)
        self._expire(rows, now_ms)
        out.label_columns = rows.batch()
        return out

    def restore_pending(self, labels: list[dict[str, Any]], now_ms: int) -> None:
        """Labels the store says are pending; each gets a fresh TTL from ``now_ms``. One already
        waiting here keeps its deadline, and one joined here is not waiting any more."""
        for label in labels:
            key = self._key(label)
            if key not in self.pending and key not in self._joined:
                self.pending[key] = (label, now_ms + self.label_ttl_ms, label.get("source") or "")

    def restore_joined(self, rows: list[dict[str, Any]], all_joins: bool = False) -> None:
        """Recent joins the store holds (``label``, ``value``, ``label_time``, ``source``), oldest first:
        a replay of the records that made them is then recognised after a restart.

        ``all_joins``: the rows are every join the store holds for the events this instance
        reads, and no other instance writes joins for them until the next call (the service
        calls this once it owns its partitions and after each rebalance). Then, as long as
        no join is forgotten (``joined_capacity``), labels are checked against memory alone,
        without a ``joined_lookup`` per batch.
        """
        self._joined_complete = False
        forgotten = self._joins_forgotten
        for row in rows:
            self._remember_join(self._key(row), row, row.get("source") or "")
        self._joined_complete = all_joins and len(rows) < self.joined_capacity and self._joins_forgotten == forgotten

    def restore_predictions(self, predictions: list[dict[str, Any]], all_predictions: bool = False) -> None:
        """Champion predictions the store holds (records or ``predictions`` rows), oldest first.

        ``all_predictions``: they are every champion prediction the store holds for the events
        this instance reads (as for :meth:`restore_joined`). Then, until memory forgets one
        (``recent_capacity``), a label whose prediction is not in memory has none in the store
        either, and waits without a ``lookup``.
        """
        self._predictions_complete = False
        forgotten = self._recent.forgotten
        self._recent.put(predictions)
        self._predictions_forgotten = self._recent.forgotten
        self._predictions_complete = all_predictions and len(predictions) < self.recent_capacity and \
            self._recent.forgotten == forgotten

    @staticmethod
    def _key(record: dict[str, Any]) -> Key:
        return record["model"], record["event_id"]

    def _label(self, out: JoinOutput, rows: _LabelRows, label: dict[str, Any], key: Key, source: str | None,
               known: dict[Key, Joinable], now_ms: int) -> None:
        joined = self._joined.get(key)
        if joined is not None:
            if source is not None and joined.source == source:
                prediction = known.get(key)
                if prediction is not None:  # the prediction is always found: it was joined once
                    out.replays += 1
                    self._join(out, rows, label, prediction, now_ms, source)
                    return
            self._again(out, label, source, joined.as_label(key), "was joined")
            return
        waiting = self.pending.get(key)
        if waiting is not None:
            if source is None or waiting[2] != source:
                self._again(out, label, source, waiting[0], "is waiting for its prediction")
            return  # the same pending label replayed: it already waits
        prediction = known.get(key)
        if prediction is not None:
            self._join(out, rows, label, prediction, now_ms, source or "")
        elif len(self.pending) >= self.max_pending:
            out.refused.append(Refused(label, source, (
                f"pending labels full: {self.max_pending} labels already wait for their predictions "
                f"(DRIFTLINE_LABEL_MAX_PENDING); send event {label['event_id']!r}'s label again once its "
                "prediction exists"), PENDING_FULL))
        else:
            self.pending[key] = (label, now_ms + self.label_ttl_ms, source or "")
            rows.append(label, "pending", "waiting for its prediction", now_ms, source or "")

    def _again(self, out: JoinOutput, label: dict[str, Any], source: str | None, first: dict[str, Any],
               state: str) -> None:
        """A second label for an event: a retry of the first is absorbed, a different one refused."""
        if _same_truth(label, first):
            out.retries += 1
            return
        shown = first["value"] if first.get("value") is not None else first["label"]
        mine = label["value"] if label.get("value") is not None else label["label"]
        out.refused.append(Refused(label, source, (
            f"duplicate label for event {label['event_id']!r} of model {label['model']!r}: {mine!r} arrived after "
            f"{shown!r}, which {state}; the first label wins"), DUPLICATE_LABEL))

    def _load_joined(self, keys: list[Key]) -> None:
        """Ask the store which of these events were joined before: one query per model."""
        if self.joined_lookup is None or self._joined_complete:
            return
        for model, event_ids in _ids_by_model(keys).items():
            for event_id, row in self.joined_lookup(model, event_ids).items():
                self._remember_join((model, event_id), row, row.get("source") or "")

    def _find_predictions(self, keys: list[Key]) -> dict[Key, Joinable]:
        found: dict[Key, Joinable] = {}
        for model, event_ids in _ids_by_model(keys).items():
            for event_id, prediction in self.lookup(model, event_ids).items():
                found[(model, event_id)] = Joinable.of(prediction)
        return found

    def _expire(self, rows: _LabelRows, now_ms: int) -> None:
        expired = [key for key, (_, deadline, _) in self.pending.items() if deadline <= now_ms]
        for key in expired:
            label, _, source = self.pending.pop(key)
            reason = f"no prediction for event {label['event_id']!r} of model {label['model']!r} within {self.label_ttl_ms} ms"
            rows.append(label, "unmatched", reason, now_ms, source)

    def _remember_join(self, key: Key, label: dict[str, Any], source: str) -> None:
        self._remember(key, label["label"], label.get("value"), to_ms(label["label_time"]), source)

    def _remember(self, key: Key, truth: str, value: float | None, label_time: int, source: str) -> None:
        joined = self._joined
        again = key in joined
        joined[key] = _new_joined((truth, value, label_time, source))
        if again:
            joined.move_to_end(key)
        if len(joined) > self.joined_capacity:
            self._joined.popitem(last=False)
            self._joins_forgotten += 1
            self._joined_complete = False  # the store knows a join memory does not any more

    def _join(self, out: JoinOutput, rows: _LabelRows, label: dict[str, Any], prediction: Joinable, now_ms: int,
              source: str) -> None:
        model, event_id, truth, value = label["model"], label["event_id"], label["label"], label.get("value")
        label_time = to_ms(label["label_time"])
        self._remember((model, event_id), truth, value, label_time, source)
        error = misclassification(prediction, label)
        out.labeled.append(
            {
                "prediction_id": prediction.prediction_id,
                "event_id": event_id,
                "model": model,
                "model_version": prediction.model_version,
                "role": prediction.role,
                "score": prediction.score,
                "predicted_label": prediction.predicted_label,
                "label": truth,
                "value": value,
                "error": error,
                "event_time": prediction.event_time,
                "prediction_time": prediction.prediction_time,
                "label_time": label_time,
            }
        )
        rows.add((event_id, model, truth, value, label_time, "joined", STATUS_RANK["joined"], "",
                  prediction.model_version, prediction.predicted_label, error, prediction.event_time, now_ms, source))


def _ids_by_model(keys: list[Key]) -> dict[str, list[str]]:
    by_model: dict[str, set[str]] = {}
    for model, event_id in keys:
        by_model.setdefault(model, set()).add(event_id)
    return {model: sorted(ids) for model, ids in by_model.items()}
