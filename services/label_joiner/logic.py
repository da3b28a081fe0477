"""Label-joiner: match each label with its champion prediction, however late or early it arrives.

- A label that arrives after its prediction (seconds or hours later) is joined
  from a bounded cache of recent predictions or, failing that, from the store
  (``lookup``), so lateness is bounded only by what the store keeps.
- A label that arrives before its prediction waits in ``pending`` until the
  prediction comes or ``label_ttl_ms`` passes; then it is logged as unmatched
  with the reason. Pending labels are also written to the store, so a restarted
  joiner picks them up again (:meth:`LabelJoiner.restore_pending`).

Pure logic: the runner supplies ``lookup`` and does the I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftline.timeutil import to_datetime, to_ms

STATUS_RANK = {"pending": 0, "unmatched": 1, "joined": 2}

#: (model, event_id) -> the champion prediction fields a join needs.
Lookup = Callable[[str, list[str]], dict[str, dict[str, Any]]]


@dataclass
class JoinOutput:
    prediction_rows: list[dict[str, Any]] = field(default_factory=list)
    label_rows: list[dict[str, Any]] = field(default_factory=list)
    labeled: list[dict[str, Any]] = field(default_factory=list)


def prediction_row(p: dict[str, Any]) -> dict[str, Any]:
    """A Prediction record as a row of the ``predictions`` table."""
    return {**p, "event_time": to_datetime(to_ms(p["event_time"])), "prediction_time": to_datetime(to_ms(p["prediction_time"]))}


def misclassification(prediction: dict[str, Any], label: dict[str, Any]) -> float:
    """The error stream's element: 0/1 misclassification for a classifier (two classes or more:
    the predicted class against the true one), absolute error ``|value - score|`` for a regressor.

    Ingest gives a label a ``value`` only when its model's contract says ``regression``,
    so the label alone says which applies, also for labels joined from the store.
    """
    if label.get("value") is not None:
        return abs(float(label["value"]) - float(prediction["score"]))
    return 0.0 if prediction["predicted_label"] == label["label"] else 1.0


class LabelJoiner:
    """
    Parameters
    ----------
    lookup
        Finds champion predictions no longer in the cache: ``(model, event_ids) -> {event_id: prediction}``.
    label_ttl_ms
        How long an early label waits for its prediction before it is logged as unmatched.
    recent_capacity
        Champion predictions kept in memory for fast joins.
    """

    def __init__(self, lookup: Lookup, label_ttl_ms: int = 3_600_000, recent_capacity: int = 200_000):
        self.lookup = lookup
        self.label_ttl_ms = label_ttl_ms
        self.recent_capacity = recent_capacity
        self._recent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.pending: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}  # key -> (label, deadline ms)

    def process(self, predictions: list[dict[str, Any]], labels: list[dict[str, Any]], now_ms: int) -> JoinOutput:
        out = JoinOutput(prediction_rows=[prediction_row(p) for p in predictions])
        for p in predictions:
            if p["role"] != "champion":
                continue
            key = (p["model"], p["event_id"])
            self._remember(key, p)
            waiting = self.pending.pop(key, None)
            if waiting is not None:
                self._join(out, waiting[0], p, now_ms)
        unresolved = []
        for label in labels:
            key = (label["model"], label["event_id"])
            if key in self._recent:
                self._join(out, label, self._recent[key], now_ms)
            else:
                unresolved.append(label)
        self._resolve_from_store(out, unresolved, now_ms)
        self._expire(out, now_ms)
        return out

    def restore_pending(self, labels: list[dict[str, Any]], now_ms: int) -> None:
        """Labels the store says are pending; each gets a fresh TTL from ``now_ms``."""
        for label in labels:
            self.pending[(label["model"], label["event_id"])] = (label, now_ms + self.label_ttl_ms)

    def _resolve_from_store(self, out: JoinOutput, labels: list[dict[str, Any]], now_ms: int) -> None:
        by_model: dict[str, list[dict[str, Any]]] = {}
        for label in labels:
            by_model.setdefault(label["model"], []).append(label)
        for model, group in by_model.items():
            found = self.lookup(model, [label["event_id"] for label in group])
            for label in group:
                prediction = found.get(label["event_id"])
                if prediction is not None:
                    self._join(out, label, prediction, now_ms)
                else:
                    self.pending[(model, label["event_id"])] = (label, now_ms + self.label_ttl_ms)
                    out.label_rows.append(self._label_row(label, "pending", "waiting for its prediction", now_ms))

    def _expire(self, out: JoinOutput, now_ms: int) -> None:
        expired = [key for key, (_, deadline) in self.pending.items() if deadline <= now_ms]
        for key in expired:
            label, _ = self.pending.pop(key)
            reason = f"no prediction for event {label['event_id']!r} of model {label['model']!r} within {self.label_ttl_ms} ms"
            out.label_rows.append(self._label_row(label, "unmatched", reason, now_ms))

    def _remember(self, key: tuple[str, str], prediction: dict[str, Any]) -> None:
        self._recent[key] = prediction
        if len(self._recent) > self.recent_capacity:
            self._recent.popitem(last=False)

    def _join(self, out: JoinOutput, label: dict[str, Any], prediction: dict[str, Any], now_ms: int) -> None:
        error = misclassification(prediction, label)
        out.labeled.append(
            {
                "prediction_id": prediction["prediction_id"],
                "event_id": label["event_id"],
                "model": label["model"],
                "model_version": prediction["model_version"],
                "role": prediction["role"],
                "score": prediction["score"],
                "predicted_label": prediction["predicted_label"],
                "label": label["label"],
                "value": label.get("value"),
                "error": error,
                "event_time": to_ms(prediction["event_time"]),
                "prediction_time": to_ms(prediction["prediction_time"]),
                "label_time": to_ms(label["label_time"]),
            }
        )
        row = self._label_row(label, "joined", "", now_ms)
        row.update(model_version=prediction["model_version"], predicted_label=prediction["predicted_label"],
                   error=error, event_time=to_datetime(to_ms(prediction["event_time"])))
        out.label_rows.append(row)

    @staticmethod
    def _label_row(label: dict[str, Any], status: str, reason: str, now_ms: int) -> dict[str, Any]:
        return {
            "event_id": label["event_id"],
            "model": label["model"],
            "label": label["label"],
            "value": label.get("value"),
            "label_time": to_datetime(to_ms(label["label_time"])),
            "status": status,
            "status_rank": STATUS_RANK[status],
            "reason": reason,
            "model_version": 0,
            "predicted_label": "",
            "error": None,
            "event_time": None,
            "updated_at": to_datetime(now_ms),
        }
