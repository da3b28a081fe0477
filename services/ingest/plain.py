"""Ingest's fast path: a batch of plain, valid records proven so column by column.

Almost every record a producer sends is *plain*: a dict with exactly the fields
of its shape, strings that are short ASCII, an epoch-ms ``int`` time, feature
maps of ``float`` and ``str`` values. For such a batch every check of the slow
path (:func:`~driftline.services.ingest.bounds.value_problems`, pydantic, the
feature contract, the event-time window) can be decided with a handful of
C-speed builtins over a whole column (``set(map(type, ...))``, ``"".join(...)
.isascii()``, ``min``/``max``), and the canonical record built without pydantic.

It only ever says "these records pass, and here they are": a batch it cannot
prove plain is split into smaller groups, and a record it cannot prove goes
through the slow path, which finds and words its problems as before. So the
result is the same record the slow path builds (the tests compare both), for a
fraction of the cost.

Pure: plain values in, records out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import chain
from operator import add, itemgetter
from typing import Any

from driftline.contract import FeatureContract
from driftline.services.ingest.bounds import EARLIEST_TIME_MS, LATEST_TIME_MS, Bounds

EVENT_FIELDS = ("model", "event_id", "entity_id", "event_time", "numeric_features", "categorical_features")
#: The label fields the fast path takes: a class label and, optionally, its time.
LABEL_FIELDS = ("model", "event_id", "label", "label_time")
LABEL_FIELDS_UNTIMED = ("model", "event_id", "label")

#: A batch that fails the column checks is retried in groups of this many records;
#: a group that fails again goes record by record (only those records pay for the slow path).
GROUP = 32

_event_columns = itemgetter(*EVENT_FIELDS)


def _strings_fine(column: Iterable[Any], max_chars: int, non_empty: bool) -> bool:
    """Every item a short ASCII ``str`` (non-empty if ``non_empty``): what the bounds and the
    shape's ``StrictStr`` accept without a word (ASCII is always valid UTF-8)."""
    column = list(column)
    if not column:
        return True
    if set(map(type, column)) != {str}:
        return False
    lengths = list(map(len, column))
    if max(lengths) > max_chars or (non_empty and min(lengths) == 0):
        return False
    return "".join(column).isascii()


def _times_fine(times: list[Any], now: int, bounds: Bounds, past_limited: bool) -> bool:
    """Every time an ``int`` of epoch ms that :func:`~driftline.services.ingest.bounds.time_problems`
    and the number bounds accept."""
    if set(map(type, times)) != {int}:
        return False
    low, high = min(times), max(times)
    if low < EARLIEST_TIME_MS or high > LATEST_TIME_MS or high > now + bounds.max_future_ms:
        return False
    if past_limited and bounds.max_past_ms is not None and low < now - bounds.max_past_ms:
        return False
    return bounds.max_abs_number is None or max(abs(low), abs(high)) <= bounds.max_abs_number


def _floats_fine(values: list[Any], bounds: Bounds) -> bool:
    """Every value a finite ``float`` within the magnitude bound. A sum that overflows finite
    values also fails: those records take the slow path, which passes them."""
    if not values:
        return True
    if set(map(type, values)) != {float} or not math.isfinite(sum(values)):
        return False
    return bounds.max_abs_number is None or max(map(abs, values)) <= bounds.max_abs_number


def _same(mapping: dict) -> dict:
    return mapping


def _sorter(keys: tuple[str, ...]) -> Callable[[dict], dict]:
    """A map with these keys in key order (the canonical record, see ``Ingest._event``): the map
    itself when it is in order already (ingest only reads it, and keeps it no longer than the
    request), else a copy in order."""
    ordered = tuple(sorted(keys))
    if ordered == keys:
        return _same
    return lambda mapping: {k: mapping[k] for k in ordered}


def _contract_fine(contract: FeatureContract | None, numeric: tuple[str, ...], categorical: tuple[str, ...]) -> bool:
    """What :meth:`FeatureContract.problems` would find nothing wrong with."""
    if contract is None:
        return False
    return (set(numeric) <= set(contract.numeric) and set(categorical) <= set(contract.categorical)
            and contract.required <= set(numeric) | set(categorical))


class PlainEvents:
    """Feature events proven valid column by column.

    Parameters
    ----------
    contract_of
        ``model name -> FeatureContract`` (None: unknown model, the slow path words it).
    bounds
        The limits every record is held to.
    """

    def __init__(self, contract_of: Callable[[str], FeatureContract | None], bounds: Bounds):
        self.contract_of = contract_of
        self.bounds = bounds
        self._sorters: dict[tuple[str, ...], Callable[[dict], dict]] = {}
        # Bounds so tight that the field names themselves break them: only the slow path words that.
        self._usable = bounds.max_depth >= 2 and bounds.max_string_chars >= max(map(len, EVENT_FIELDS))

    def __call__(self, values: list[Any], now: int) -> dict[int, dict[str, Any]]:
        """Position in ``values`` -> canonical record, for every record proven valid."""
        if not self._usable:
            return {}
        return _proven(values, lambda group: self._records(group, now))

    def _records(self, values: list[Any], now: int) -> list[dict[str, Any]] | None:
        """The records of ``values`` if every one is plain and valid, else None."""
        for value in values:
            if type(value) is not dict or value.keys() != _EVENT_KEYS:
                return None
        models, event_ids, entity_ids, times, numerics, categoricals = zip(*map(_event_columns, values))
        bounds, max_chars = self.bounds, self.bounds.max_string_chars
        if not (_strings_fine(models, max_chars, True) and _strings_fine(event_ids, max_chars, True)
                and _strings_fine(entity_ids, max_chars, True) and _times_fine(times, now, bounds, True)):
            return None
        if set(map(type, numerics)) != {dict} or set(map(type, categoricals)) != {dict}:
            return None
        if max(map(add, map(len, numerics), map(len, categoricals))) > bounds.max_features:
            return None
        numeric_keys, categorical_keys = list(map(tuple, numerics)), list(map(tuple, categoricals))
        if not (_strings_fine(chain.from_iterable(numeric_keys), max_chars, False)
                and _strings_fine(chain.from_iterable(categorical_keys), max_chars, False)
                and _floats_fine(list(chain.from_iterable(map(dict.values, numerics))), bounds)
                and _strings_fine(chain.from_iterable(map(dict.values, categoricals)), max_chars, False)):
            return None
        # The contract last: the slow path asks the registry only for records that passed the bounds.
        shapes = set(zip(models, numeric_keys, categorical_keys))
        contracts = {model: self.contract_of(model) for model in set(models)}
        if not all(_contract_fine(contracts[m], n, c) for m, n, c in shapes):
            return None
        sort_numeric = list(map(self._sorter, numeric_keys))
        sort_categorical = list(map(self._sorter, categorical_keys))
        return [
            {"model": model, "event_id": event_id, "entity_id": entity_id, "event_time": time,
             "numeric_features": by_key_n(numeric), "categorical_features": by_key_c(categorical)}
            for model, event_id, entity_id, time, numeric, categorical, by_key_n, by_key_c
            in zip(models, event_ids, entity_ids, times, numerics, categoricals, sort_numeric, sort_categorical)
        ]

    def _sorter(self, keys: tuple[str, ...]) -> Callable[[dict], dict]:
        sorter = self._sorters.get(keys)
        if sorter is None:
            if len(self._sorters) > 1024:  # producers sending ever new key orders: stay bounded
                self._sorters.clear()
            sorter = self._sorters[keys] = _sorter(keys)
        return sorter


_EVENT_KEYS = frozenset(EVENT_FIELDS)
_LABEL_KEYS = frozenset(LABEL_FIELDS)
_LABEL_KEYS_UNTIMED = frozenset(LABEL_FIELDS_UNTIMED)


class PlainLabels:
    """Class labels (``label`` a string, ``label_time`` an int or absent) for classification
    models, proven valid column by column; anything else takes the slow path."""

    def __init__(self, contract_of: Callable[[str], FeatureContract | None], bounds: Bounds):
        self.contract_of = contract_of
        self.bounds = bounds
        self._usable = bounds.max_depth >= 1 and bounds.max_string_chars >= max(map(len, LABEL_FIELDS))

    def __call__(self, values: list[Any], now: int) -> dict[int, dict[str, Any]]:
        """Position in ``values`` -> canonical record, for every record proven valid."""
        if not self._usable:
            return {}
        return _proven(values, lambda group: self._records(group, now))

    def _records(self, values: list[Any], now: int) -> list[dict[str, Any]] | None:
        for value in values:
            if type(value) is not dict or (value.keys() != _LABEL_KEYS and value.keys() != _LABEL_KEYS_UNTIMED):
                return None
        models = [v["model"] for v in values]
        event_ids = [v["event_id"] for v in values]
        labels = [v["label"] for v in values]
        # An absent time is ingest's clock (as in ``Ingest._label``), which the window always accepts.
        times = [v.get("label_time", now) for v in values]
        max_chars = self.bounds.max_string_chars
        if not (_strings_fine(models, max_chars, True) and _strings_fine(event_ids, max_chars, True)
                and _strings_fine(labels, max_chars, False) and _times_fine(times, now, self.bounds, False)):
            return None
        for model in set(models):
            contract = self.contract_of(model)
            if contract is None or contract.task == "regression":
                return None
        return [{"model": model, "event_id": event_id, "label": label, "value": None, "label_time": time}
                for model, event_id, label, time in zip(models, event_ids, labels, times)]


def _proven(values: list[Any], records: Callable[[list[Any]], list[dict[str, Any]] | None]) -> dict[int, dict[str, Any]]:
    """Position -> record for the values ``records`` proves valid: the whole batch at once, else
    in groups of :data:`GROUP`, else one by one (so one odd record costs little to the rest)."""
    proven: dict[int, dict[str, Any]] = {}
    if not values:
        return proven
    found = records(values)
    if found is not None:
        return dict(enumerate(found))
    for start in range(0, len(values), GROUP):
        group = values[start:start + GROUP]
        found = records(group) if len(group) > 1 else None
        if found is not None:
            proven.update(enumerate(found, start))
            continue
        for position, value in enumerate(group, start):
            single = records([value])
            if single is not None:
                proven[position] = single[0]
    return proven
