"""The label-joiner's memory of recent champion predictions: only what a join needs, compactly.

A decoded Prediction record with its feature maps takes about 2.2 KB; 200,000 of them
dominated a long run's memory. A join needs seven fields, so each is kept in a ring of
numpy arrays (one per field) and a per-model dict finds an event's slot: about 200 bytes
per prediction, the event id string included.
"""

from __future__ import annotations

import sys
from functools import partial
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from driftline.timeutil import to_ms

_INTERNED_MAX = 10_000  # distinct role / predicted-label strings shared (regression labels are not)


#: The ``predictions`` columns kept.
_KEPT = ("model", "event_id", "prediction_id", "model_version", "role", "score", "predicted_label", "event_time",
         "prediction_time")


class Joinable(NamedTuple):
    """The fields of a champion prediction that a join needs (times in epoch ms)."""

    prediction_id: str
    model_version: int
    role: str
    score: float
    predicted_label: str
    event_time: int
    prediction_time: int

    @classmethod
    def of(cls, prediction: Mapping[str, Any]) -> Joinable:
        """From a Prediction record or a ``predictions`` row (times as datetimes or ms)."""
        return cls(prediction["prediction_id"], int(prediction["model_version"]), prediction["role"],
                   float(prediction["score"]), prediction["predicted_label"], to_ms(prediction["event_time"]),
                   to_ms(prediction["prediction_time"]))


_new_joinable = partial(tuple.__new__, Joinable)  # from a tuple, without NamedTuple's Python-level __new__


def _derived_id(event_id: str, model_version: int, role: str) -> str:
    """The predictor's prediction id (``event_id:model_version:role``): not stored when it is this."""
    return f"{event_id}:{model_version}:{role}"


class RecentPredictions:
    """The last ``capacity`` predictions put, by (model, event_id).

    A prediction put again (a replay) takes a new slot; its old slot is dead and is
    reused in turn. Arrays grow by doubling up to ``capacity``.

    Parameters
    ----------
    capacity
        Most predictions kept; the oldest put is forgotten first.
    """

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self._puts = 0  # predictions put so far: the next slot is _puts % capacity
        self.forgotten = 0  # predictions forgotten to make room (not counting one replaced by its replay)
        self._slots: dict[str, dict[str, int]] = {}  # model -> event_id -> slot
        self._interned: dict[str, str] = {}
        self._allocate(min(self.capacity, 1024))

    def _allocate(self, size: int) -> None:
        old = getattr(self, "_size", 0)
        self._size = size

        def grown(array: np.ndarray | None, dtype: Any) -> np.ndarray:
            new = np.empty(size, dtype=dtype) if dtype is object else np.zeros(size, dtype=dtype)
            if array is not None:
                new[:old] = array[:old]
            return new

        first = old == 0
        self._model = grown(None if first else self._model, object)
        self._event_id = grown(None if first else self._event_id, object)
        self._prediction_id = grown(None if first else self._prediction_id, object)  # None: derived
        self._role = grown(None if first else self._role, object)
        self._predicted_label = grown(None if first else self._predicted_label, object)
        self._model_version = grown(None if first else self._model_version, np.int64)
        self._score = grown(None if first else self._score, np.float64)
        self._event_time = grown(None if first else self._event_time, np.int64)
        self._prediction_time = grown(None if first else self._prediction_time, np.int64)

    def __len__(self) -> int:
        return sum(len(slots) for slots in self._slots.values())

    def __contains__(self, key: tuple[str, str]) -> bool:
        slots = self._slots.get(key[0])
        return slots is not None and key[1] in slots

    def _intern(self, text: str) -> str:
        shared = self._interned.get(text)
        if shared is not None:
            return shared
        if len(self._interned) < _INTERNED_MAX:
            self._interned[text] = text = sys.intern(text)
        return text

    def put(self, predictions: Sequence[Mapping[str, Any]]) -> None:
        """Remember these predictions (records or rows), in order; a later one for the same
        (model, event_id) replaces an earlier one."""
        columns = {name: [p[name] for p in predictions] for name in _KEPT}
        for name in ("event_time", "prediction_time"):
            columns[name] = [to_ms(v) for v in columns[name]]
        self.put_columns(columns)

    def put_columns(self, columns: Mapping[str, Sequence[Any]], rows: Sequence[int] | None = None) -> None:
        """Like :meth:`put`, from ``predictions`` columns (times in epoch ms), optionally only ``rows``."""
        if rows is not None:
            columns = {name: [columns[name][i] for i in rows] for name in _KEPT}
        n = len(columns["event_id"])
        skip = max(n - self.capacity, 0)  # more than fit: only the newest are kept
        if skip:
            columns = {name: list(columns[name][skip:]) for name in _KEPT}
            n -= skip
            self.forgotten += skip
        if not n:
            return
        end = self._puts + n
        if self._size < self.capacity and end > self._size:
            size = self._size
            while size < min(end, self.capacity):
                size *= 2
            self._allocate(min(size, self.capacity))
        puts = np.arange(self._puts, end)
        slots = puts % self.capacity
        if end > self.capacity:  # reusing slots: forget what they held, unless it moved on
            for slot in slots[puts >= self.capacity].tolist():
                model = self._model[slot]
                if model is not None:
                    by_event = self._slots[model]
                    if by_event.get(self._event_id[slot]) == slot:
                        del by_event[self._event_id[slot]]
                        self.forgotten += 1
        models, roles = self._shared(columns["model"]), self._shared(columns["role"])
        event_ids, versions, ids = columns["event_id"], columns["model_version"], columns["prediction_id"]
        self._model[slots] = models
        self._event_id[slots] = event_ids
        self._prediction_id[slots] = [None if pid == _derived_id(e, v, r) else pid
                                      for pid, e, v, r in zip(ids, event_ids, versions, roles)]
        self._role[slots] = roles
        self._predicted_label[slots] = self._shared(columns["predicted_label"])
        self._model_version[slots] = versions
        self._score[slots] = columns["score"]
        self._event_time[slots] = columns["event_time"]
        self._prediction_time[slots] = columns["prediction_time"]
        for model, event_id, slot in zip(models, event_ids, slots.tolist()):
            by_event = self._slots.get(model)
            if by_event is None:
                by_event = self._slots[model] = {}
            by_event[event_id] = slot
        self._puts = end

    def _shared(self, texts: Sequence[str]) -> list[str]:
        """The same strings, each distinct one held once (decoded records carry a copy each)."""
        shared = {text: self._intern(text) for text in set(texts)}
        return [shared[text] for text in texts]

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Joinable]:
        """The predictions remembered for these (model, event_id) keys (the others are left out)."""
        found_keys, slots = [], []
        for key in keys:
            by_event = self._slots.get(key[0])
            slot = None if by_event is None else by_event.get(key[1])
            if slot is not None:
                found_keys.append(key)
                slots.append(slot)
        if not slots:
            return {}
        at = np.array(slots, dtype=np.int64)
        event_ids = self._event_id[at].tolist()
        versions = self._model_version[at].tolist()
        roles = self._role[at].tolist()
        ids = [pid if pid is not None else _derived_id(event_id, version, role) for pid, event_id, version, role
               in zip(self._prediction_id[at].tolist(), event_ids, versions, roles)]
        return dict(zip(found_keys, map(_new_joinable, zip(
            ids, versions, roles, self._score[at].tolist(), self._predicted_label[at].tolist(),
            self._event_time[at].tolist(), self._prediction_time[at].tolist()))))
