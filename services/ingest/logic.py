"""Ingest: validate JSON feature events and labels, one record at a time, into candidates and rejections.

Pure logic: it knows nothing about HTTP, Kafka or ClickHouse. The gateway in
:mod:`driftline.services.ingest.gateway` feeds it records split from a body
(:mod:`driftline.services.ingest.body`), encodes and publishes the candidates,
and keeps every rejection with the bytes received for it.

Each record goes through, in order: the bounds of
:mod:`driftline.services.ingest.bounds` (nothing later meets a value it cannot
handle), its pydantic shape, the model's feature contract, and the event-time
window. A record failing anywhere is rejected alone; the others go on.

Plain records (the usual ones) are first proven valid a whole batch at a time,
column by column, by :mod:`driftline.services.ingest.plain`: the same checks,
the same canonical record, without a walk or pydantic per record. Only the
records it cannot prove take the path above, which words their problems.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from driftline.contract import FeatureContract
from driftline.timeutil import now_ms, to_ms
from driftline.services.ingest.body import RawRecord, payload_of
from driftline.services.ingest.bounds import (
    MAX_PROBLEMS, Bounds, feature_count_problems, time_problems, value_problems,
)
from driftline.services.ingest.plain import PlainEvents, PlainLabels


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
    label: StrictStr | int | bool | None = Field(None, description="True class (classification).")
    value: float | None = Field(None, description="True value (regression); finite.")
    label_time: datetime | int | None = None

    @field_validator("value")
    @classmethod
    def _finite_value(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("a label value must be a finite number")
        return value


@dataclass(frozen=True)
class Rejection:
    """A record ingest did not publish, and why.

    ``status`` is per record: 422 invalid, 409 duplicate event_id, 413 too large once
    encoded, 503 the bus refused it (retry later).
    """

    index: int
    event_id: str | None
    errors: list[dict[str, str]]  # [{"field": ..., "message": ...}]
    payload: bytes  # the record exactly as received
    status: int = 422

    @property
    def reason(self) -> str:
        return "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)


@dataclass(frozen=True)
class Candidate:
    """A valid record, ready to be encoded and published."""

    index: int
    record: dict[str, Any]
    source: RawRecord

    @property
    def payload(self) -> bytes:
        return payload_of(self.source)


@dataclass
class Validation:
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


#: At most this many names are listed in a message that names the expected ones.
MAX_NAMES_LISTED = 20


def _listing(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    more = len(names) - MAX_NAMES_LISTED
    return shown + (f" … and {more} more" if more > 0 else "") if names else "(none)"


def _did_you_mean(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _unknown_field_message(name: str, shape: type[BaseModel]) -> str:
    """Names the fields a record of ``shape`` has: the user learns the format from the error."""
    required = [n for n, f in shape.model_fields.items() if f.is_required()]
    optional = [n for n, f in shape.model_fields.items() if not f.is_required()]
    kind = "an event" if shape is FeatureEventIn else "a label"
    return (f"unknown field; {_did_you_mean(name, shape.model_fields)}{kind} has the fields "
            f"{', '.join(required)} (required) and {', '.join(optional)}")


def _pydantic_errors(exc: ValidationError, shape: type[BaseModel]) -> list[dict[str, str]]:
    errors = []
    for e in exc.errors()[:MAX_PROBLEMS]:
        message = e["msg"]
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            message = _unknown_field_message(str(e["loc"][0]), shape)
        errors.append({"field": ".".join(str(p) for p in e["loc"]) or "(record)", "message": message})
    return errors


def no_champion_message(model: str) -> str:
    """What to do about an event for a model without a champion."""
    return (f"model {model!r} has no champion to score it: register one with "
            f"`driftline model register {model} --data FILE --target COL --champion` "
            f"(or promote a registered version: `driftline model promote {model} VERSION --reason ...`)")


def unknown_model_message(model: str) -> str:
    """Why a label for a model without a champion is refused."""
    return (f"unknown model {model!r}: the registry has no champion for it, so no prediction to join this "
            f"label with; register it first (`driftline model register {model} --data FILE --target COL "
            "--champion`) and send labels for the events it scored")


def contract_problems(model: str, contract: FeatureContract, numeric: dict[str, Any],
                      categorical: dict[str, Any]) -> list[tuple[str, str]]:
    """The contract's problems with an event; a feature it does not know is answered with the
    names it does know (and the closest one), so the producer can fix the name."""
    known = set(contract.numeric) | set(contract.categorical)
    problems = []
    for field_name, message in contract.problems(numeric, categorical):
        name = field_name.split(".", 1)[1]
        if name not in known:
            message = (f"{message}; {_did_you_mean(name, known)}model {model!r} reads numeric features "
                       f"{_listing(contract.numeric)} and categorical features {_listing(contract.categorical)}")
        problems.append((field_name, message))
    return problems


def _errors(problems: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"field": f, "message": m} for f, m in problems]


class Ingest:
    """Validates records against their bounds, their pydantic shape and the model's feature contract.

    Parameters
    ----------
    contract_of
        ``model name -> FeatureContract`` of its champion, or None if the model is unknown.
    bounds
        The limits every record is held to.
    clock
        Epoch ms now, for the event-time window.
    prove_plain
        Prove plain records valid a batch at a time (:mod:`~driftline.services.ingest.plain`);
        False sends every record through the per-record path (the tests compare both).
    """

    def __init__(self, contract_of: Callable[[str], FeatureContract | None], bounds: Bounds | None = None,
                 clock: Callable[[], int] = now_ms, prove_plain: bool = True):
        self.contract_of = contract_of
        self.bounds = bounds or Bounds()
        self.clock = clock
        self._plain_events = PlainEvents(contract_of, self.bounds) if prove_plain else None
        self._plain_labels = PlainLabels(contract_of, self.bounds) if prove_plain else None

    def events(self, records: list[RawRecord]) -> Validation:
        return self._validate(records, FeatureEventIn, self._event, self._plain_events)

    def labels(self, records: list[RawRecord]) -> Validation:
        return self._validate(records, LabelIn, self._label, self._plain_labels)

    def _event(self, event: FeatureEventIn, now: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        contract = self.contract_of(event.model)
        if contract is None:
            problems = [("model", no_champion_message(event.model))]
        else:
            problems = contract_problems(event.model, contract, event.numeric_features, event.categorical_features)
        record = {
            "model": event.model,
            "event_id": event.event_id,
            "entity_id": event.entity_id,
            "event_time": to_ms(event.event_time),
            # In key order: the same event always encodes to the same bytes (the duplicate
            # policy compares digests of them).
            "numeric_features": dict(sorted(event.numeric_features.items())),
            "categorical_features": dict(sorted(event.categorical_features.items())),
        }
        problems += time_problems("event_time", record["event_time"], now, self.bounds, past_limited=True)
        return record, problems

    def _label(self, label: LabelIn, now: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        contract = self.contract_of(label.model)
        regression = contract is not None and contract.task == "regression"
        value, problems = (_regression_value(label) if regression
                           else _classification_value(label, contract is not None))
        if contract is None:
            # No champion, so no prediction to join it with: it would only wait out the label TTL.
            problems = [("model", unknown_model_message(label.model))]
        if label.label is None:
            # repr round-trips the float exactly (driftline.models.value_label, without importing sklearn here)
            text = repr(float(value)) if value is not None else ""
        else:
            text = str(int(label.label)) if isinstance(label.label, bool) else str(label.label)
        record = {
            "model": label.model,
            "event_id": label.event_id,
            "label": text,
            "value": value,
            "label_time": to_ms(label.label_time) if label.label_time is not None else now,
        }
        # Label times are not held to the past window: labels for old events are normal.
        return record, problems + time_problems("label_time", record["label_time"], now, self.bounds,
                                                past_limited=False)

    def _validate(self, records: list[RawRecord], shape: type[BaseModel], convert, plain) -> Validation:
        """Each record through the bounds, its pydantic ``shape``, then ``convert`` (record, problems);
        the records ``plain`` proves valid skip those steps and arrive at the same record."""
        result = Validation()
        now = self.clock()
        proven = plain([source.value for source in records], now) if plain is not None else {}
        if len(proven) == len(records):
            result.candidates = [Candidate(source.index, record, source) for source, record in zip(records, proven.values())]
            return result
        for position, source in enumerate(records):
            record = proven.get(position)
            if record is not None:
                result.candidates.append(Candidate(source.index, record, source))
                continue
            problems = value_problems(source.value, self.bounds) or feature_count_problems(source.value, self.bounds)
            if problems:
                result.rejected.append(self._reject(source, _errors(problems)))
                continue
            try:
                parsed = shape.model_validate(source.value)
            except ValidationError as exc:
                result.rejected.append(self._reject(source, _pydantic_errors(exc, shape)))
                continue
            record, problems = convert(parsed, now)
            if problems:
                result.rejected.append(Rejection(source.index, record["event_id"], _errors(problems),
                                                 payload_of(source)))
            else:
                result.candidates.append(Candidate(source.index, record, source))
        return result

    @staticmethod
    def _reject(source: RawRecord, errors: list[dict[str, str]]) -> Rejection:
        return Rejection(source.index, _event_id(source.value), errors, payload_of(source))


def _regression_value(label: LabelIn) -> tuple[float | None, list[tuple[str, str]]]:
    """A regression label's true value: ``value``, or a ``label`` that is a finite number."""
    if label.value is not None:
        return label.value, []
    if label.label is not None and not isinstance(label.label, bool):
        try:
            value = float(label.label)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value, []
    return None, [("value", f"model {label.model!r} is a regression model: its label needs a finite "
                            "numeric 'value' (e.g. \"value\": 12.5)")]


def _classification_value(label: LabelIn, known: bool) -> tuple[float | None, list[tuple[str, str]]]:
    """A classification label has a class and no value (a value would turn its error into a distance)."""
    if label.label is None and (known or label.value is None):
        return None, [("label", f"model {label.model!r} is a classification model: send its true class as 'label'")]
    if label.value is not None and known:
        return None, [("value", f"model {label.model!r} is a classification model: 'value' is for regression "
                                "models; send the true class as 'label'")]
    return label.value, []


def _event_id(record: Any) -> str | None:
    """The record's event_id if it has a usable one (a short, UTF-8-clean string)."""
    value = record.get("event_id") if isinstance(record, dict) else None
    if not isinstance(value, str) or len(value) > 1024:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value
