"""Turn a row of a data file into an ingest record: which column is the id, the time, the label, the features.

Every column that is not the model, id, entity or time column is a feature,
typed by the model's contract (a numeric feature becomes a number, a
categorical one a string); without a contract, numbers are numeric features
and text is categorical. A missing value (an empty CSV cell, a JSON null, a NaN)
makes the feature absent. A value that cannot be what the contract says (text
in a numeric feature) is passed on as it is, so that ingest rejects that event
with the reason and keeps it in ``dead_letters``: nothing is dropped here.

Pure: dicts in, dicts out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from driftline.contract import FeatureContract

_INTEGER = re.compile(r"^[+-]?\d+(\.0*)?$")


def is_missing(value: Any) -> bool:
    """An empty CSV cell, a JSON null or a NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    return False


def as_time(value: Any) -> Any:
    """Epoch milliseconds for numbers and digit strings, ISO-8601 for datetimes; any other text as it is
    (ingest parses ISO-8601 and rejects the rest with the reason).

    Examples
    --------
    >>> as_time("1700000000000"), as_time(1700000000000.0), as_time("2026-01-01T00:00:00Z")
    (1700000000000, 1700000000000, '2026-01-01T00:00:00Z')
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(float(value.strip())) if "." in value else int(value.strip())
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def as_number(value: Any) -> Any:
    """A float if ``value`` reads as a finite one; else the value unchanged (for ingest to reject).

    >>> as_number("3.5"), as_number(2), as_number("n/a")
    (3.5, 2.0, 'n/a')
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    if hasattr(value, "item"):  # numpy / Decimal-like scalars from Parquet
        return as_number(value.item())
    return value


def as_category(value: Any) -> str:
    """Text for a categorical feature: a whole float is written as an integer (``3.0`` -> ``"3"``).

    >>> as_category(3.0), as_category(7), as_category("north")
    ('3', '7', 'north')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _looks_numeric(value: Any) -> bool:
    return isinstance(as_number(value), float) and not isinstance(value, bool)


@dataclass
class EventColumns:
    """Which column is what, for feature events.

    Parameters
    ----------
    model
        The model every row is for; None: each row's ``model`` column.
    contract_of
        ``model -> FeatureContract`` of its champion, or None when it has none (then
        features are typed by their values).
    id_column, time_column, entity_column
        Where the event id, time and entity are. Without an entity column the event id is
        the entity; without a time column (``time_column`` None) ``now`` gives the time.
    now
        Epoch ms for events without a time column.
    ignore
        Columns that are not features and not sent.
    """

    model: str | None
    contract_of: Callable[[str], FeatureContract | None]
    id_column: str = "event_id"
    time_column: str | None = "event_time"
    entity_column: str | None = "entity_id"
    now: Callable[[], int] | None = None
    ignore: set[str] = field(default_factory=set)

    def special(self) -> set[str]:
        return {"model", self.id_column, self.time_column, self.entity_column} | self.ignore

    def not_in_contract(self, columns: list[str], model: str) -> tuple[list[str], list[str]]:
        """(columns that are no feature of the contract and are not sent, required features with no column)."""
        contract = self.contract_of(model)
        if contract is None:
            return [], []
        features = [c for c in columns if c not in self.special()]
        known = set(contract.numeric) | set(contract.categorical)
        return [c for c in features if c not in known], sorted(contract.required - set(columns))

    def record(self, values: dict[str, Any]) -> dict[str, Any]:
        """The event for one row. Missing required fields stay missing: ingest names them."""
        model = self.model if self.model is not None else values.get("model")
        event: dict[str, Any] = {}
        if not is_missing(model):
            event["model"] = model
        event_id = values.get(self.id_column)
        if not is_missing(event_id):
            event["event_id"] = as_category(event_id)
        entity = values.get(self.entity_column) if self.entity_column else None
        if is_missing(entity):
            entity = event_id
        if not is_missing(entity):
            event["entity_id"] = as_category(entity)
        if self.time_column is None:
            event["event_time"] = self.now() if self.now else None
        elif not is_missing(values.get(self.time_column)):
            event["event_time"] = as_time(values[self.time_column])
        contract = self.contract_of(model) if isinstance(model, str) else None
        numeric: dict[str, Any] = {}
        categorical: dict[str, Any] = {}
        special = self.special()
        for column, value in values.items():
            if column in special or is_missing(value):
                continue
            if contract is not None:
                if column in contract.numeric:
                    numeric[column] = as_number(value)
                elif column in contract.categorical:
                    categorical[column] = as_category(value)
                # other columns are not the model's features: reported once by the caller, not sent
            elif _looks_numeric(value):
                numeric[column] = as_number(value)
            else:
                categorical[column] = as_category(value)
        event["numeric_features"] = numeric
        event["categorical_features"] = categorical
        return event


@dataclass
class LabelColumns:
    """Which column is what, for labels.

    Parameters
    ----------
    model
        The model every row is for; None: each row's ``model`` column.
    id_column
        The event id the label is for.
    label_column
        The true class.
    value_column
        The true value (regression); None: no value.
    time_column
        When the label was known; None: ingest's clock at arrival.
    """

    model: str | None
    id_column: str = "event_id"
    label_column: str = "label"
    value_column: str | None = None
    time_column: str | None = None

    def record(self, values: dict[str, Any]) -> dict[str, Any]:
        model = self.model if self.model is not None else values.get("model")
        label: dict[str, Any] = {}
        if not is_missing(model):
            label["model"] = model
        if not is_missing(values.get(self.id_column)):
            label["event_id"] = as_category(values[self.id_column])
        if not is_missing(values.get(self.label_column)):
            raw = values[self.label_column]
            label["label"] = raw if isinstance(raw, (str, bool, int)) else as_category(raw)
        if self.value_column and not is_missing(values.get(self.value_column)):
            label["value"] = as_number(values[self.value_column])
        if self.time_column and not is_missing(values.get(self.time_column)):
            label["label_time"] = as_time(values[self.time_column])
        return label
