"""Ingest: validate JSON feature events and labels, split them into good records and dead letters.

Pure logic: it knows nothing about HTTP, Kafka or ClickHouse. The app in
:mod:`driftline.services.ingest.app` feeds it request bodies and does the I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from driftline.contract import FeatureContract
from driftline.timeutil import now_ms, to_ms


class FeatureEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: StrictStr = Field(min_length=1)
    event_id: StrictStr = Field(min_length=1)
    entity_id: StrictStr = Field(min_length=1)
    event_time: datetime | int = Field(description="ISO-8601 or epoch milliseconds.")
    numeric_features: dict[str, float] = Field(default_factory=dict)
    categorical_features: dict[str, StrictStr] = Field(default_factory=dict)

    @field_validator("numeric_features")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite values for {bad}; omit a feature to mark it missing")
        return values


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: StrictStr = Field(min_length=1)
    event_id: StrictStr = Field(min_length=1)
    label: StrictStr | int | bool
    value: float | None = None
    label_time: datetime | int | None = None


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    errors: list[dict[str, str]]  # [{"field": ..., "message": ...}]
    payload: bytes  # the record exactly as received (JSON)

    @property
    def reason(self) -> str:
        return "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)


@dataclass
class IngestResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or "(record)", "message": e["msg"]} for e in exc.errors()]


def _raw(record: Any) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record, default=str).encode()


class Ingest:
    """Validates records against their pydantic shape and the model's feature contract.

    Parameters
    ----------
    contract_of
        ``model name -> FeatureContract`` of its champion, or None if the model is unknown.
    """

    def __init__(self, contract_of: Callable[[str], FeatureContract | None]):
        self.contract_of = contract_of

    def events(self, records: list[Any]) -> IngestResult:
        return _validate(records, FeatureEventIn, self._event)

    def labels(self, records: list[Any]) -> IngestResult:
        return _validate(records, LabelIn, _label)

    def _event(self, event: FeatureEventIn) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        contract = self.contract_of(event.model)
        if contract is None:
            problems = [("model", f"unknown model {event.model!r}: no champion registered")]
        else:
            problems = contract.problems(event.numeric_features, event.categorical_features)
        record = {
            "model": event.model,
            "event_id": event.event_id,
            "entity_id": event.entity_id,
            "event_time": to_ms(event.event_time),
            "numeric_features": event.numeric_features,
            "categorical_features": event.categorical_features,
        }
        return record, problems


def _label(label: LabelIn) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    record = {
        "model": label.model,
        "event_id": label.event_id,
        "label": str(int(label.label)) if isinstance(label.label, bool) else str(label.label),
        "value": label.value,
        "label_time": to_ms(label.label_time) if label.label_time is not None else now_ms(),
    }
    return record, []


def _validate(records: list[Any], shape: type[BaseModel], convert) -> IngestResult:
    """Each record through its pydantic ``shape``, then ``convert`` (record, problems)."""
    result = IngestResult()
    for index, raw in enumerate(records):
        try:
            parsed = shape.model_validate(raw)
        except ValidationError as exc:
            result.rejected.append(Rejection(index, _event_id(raw), _pydantic_errors(exc), _raw(raw)))
            continue
        record, problems = convert(parsed)
        if problems:
            errors = [{"field": f, "message": m} for f, m in problems]
            result.rejected.append(Rejection(index, record["event_id"], errors, _raw(raw)))
        else:
            result.accepted.append(record)
    return result


def _event_id(record: Any) -> str | None:
    value = record.get("event_id") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None



