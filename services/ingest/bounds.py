"""The limits ingest holds every record to, and the walk that checks them.

Everything here runs before pydantic and before the Avro encoder see a record,
so neither meets a value it cannot handle: a string that is not UTF-8, an
integer beyond 64 bits, a float that overflowed to infinity, a structure nested
deeper than the body scan allowed (records handed over in process were never
scanned), or a record with an absurd number of features.

Pure: plain values in, ``(field, message)`` problems out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from driftline.services.ingest.body import OversizeInt, TooDeep

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What every part of driftline can hold as an event or label time: ClickHouse's
#: DateTime64(3) covers 1900-01-01 .. 2299-12-31 (and fastavro's datetime far more).
EARLIEST_TIME_MS = -2_208_988_800_000  # 1900-01-01T00:00:00Z
LATEST_TIME_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z
#: At most this many problems are reported per record: the answer stays small whatever the input.
MAX_PROBLEMS = 20
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Bounds:
    """Ingest's limits; :meth:`from_settings` reads them from the ``DRIFTLINE_INGEST_*`` settings.

    Attributes
    ----------
    max_body_bytes
        Largest request body read (413 past it, and the body is not stored).
    max_records
        Most records in one body (413 for the body, which is dead-lettered whole).
    max_depth
        Most containers nested in one record; a feature event needs 2.
    max_string_chars
        Longest string, keys included.
    max_features
        Most numeric plus categorical features in one event.
    max_record_bytes
        Largest record once Avro-encoded (Kafka's default ``message.max.bytes`` is about 1 MB).
    max_future_ms
        How far ahead of the ingest clock an event or label time may be.
    max_past_ms
        How far behind the ingest clock an event time may be; None: no limit other than
        1900-01-01. Label times are not held to it.
    max_abs_number
        Largest magnitude of a number anywhere in a record; None: any finite float.
    """

    max_body_bytes: int = 16 << 20
    max_records: int = 10_000
    max_depth: int = 32
    max_string_chars: int = 1024
    max_features: int = 1024
    max_record_bytes: int = 1_000_000
    max_future_ms: int = _DAY_MS
    max_past_ms: int | None = 3653 * _DAY_MS
    max_abs_number: float | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Bounds:
        """From a :class:`driftline.config.Settings` (its ``ingest_*`` fields)."""
        return cls(**{name: getattr(settings, f"ingest_{name}") for name in cls.__dataclass_fields__})


def _name(key: Any) -> str:
    """A key as it may appear in a field path: printable, UTF-8-safe and short."""
    text = key if isinstance(key, str) else repr(key)
    if len(text) > 40:
        text = text[:40] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(path: str, key: Any) -> str:
    return _name(key) if path == "(record)" else f"{path}.{_name(key)}"


def value_problems(value: Any, bounds: Bounds) -> list[tuple[str, str]]:
    """``(field, message)`` for every value in ``value`` that breaks ``bounds``; empty if none.

    Walks with an explicit stack, so no input can exhaust Python's recursion limit.

    Examples
    --------
    >>> value_problems({"a": [1, 2**70], "b": float("inf")}, Bounds())
    [('a.1', 'integer outside 64 bits'), ('b', 'number is not finite (NaN, Infinity, or beyond ±1.8e308)')]
    """
    if isinstance(value, TooDeep):
        return [("(record)", f"nested {value.depth} deep; at most {bounds.max_depth}")]
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, "(record)", 1)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problems.extend((path, m) for m in _string_problems(item, bounds))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                problems.append((path, "integer outside 64 bits"))
            elif bounds.max_abs_number is not None and abs(item) > bounds.max_abs_number:
                problems.append((path, f"magnitude above {bounds.max_abs_number:g}"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append((path, "number is not finite (NaN, Infinity, or beyond ±1.8e308)"))
            elif bounds.max_abs_number is not None and abs(item) > bounds.max_abs_number:
                problems.append((path, f"magnitude above {bounds.max_abs_number:g}"))
        elif isinstance(item, OversizeInt):
            problems.append((path, "integer outside 64 bits"))
        elif isinstance(item, (dict, list)):
            if depth > bounds.max_depth:
                problems.append((path, f"nested deeper than {bounds.max_depth}"))
                continue
            if isinstance(item, dict):
                for key, child in reversed(item.items()):
                    child_path = _join(path, key)
                    if isinstance(key, str):
                        # keys are strings too: the same limits, reported under the key
                        problems.extend((child_path, m) for m in _string_problems(key, bounds))
                    stack.append((child, child_path, depth + 1))
            else:
                for position in range(len(item) - 1, -1, -1):
                    stack.append((item[position], _join(path, position), depth + 1))
        else:  # only in-process callers can hand over other types
            problems.append((path, f"not a JSON value ({type(item).__name__})"))
    return problems[:MAX_PROBLEMS]


def _string_problems(text: str, bounds: Bounds) -> list[str]:
    problems = []
    if len(text) > bounds.max_string_chars:
        problems.append(f"string of {len(text)} characters; at most {bounds.max_string_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        problems.append("not valid UTF-8 (a lone surrogate or undecodable bytes)")
    return problems


def feature_count_problems(record: Any, bounds: Bounds) -> list[tuple[str, str]]:
    """Too many features in an event (checked before validation spends time on each of them)."""
    if not isinstance(record, dict):
        return []
    count = sum(len(v) for k in ("numeric_features", "categorical_features")
                if isinstance(v := record.get(k), dict))
    if count > bounds.max_features:
        return [("(record)", f"{count} features; at most {bounds.max_features}")]
    return []


def time_problems(field: str, ms: int, now_ms: int, bounds: Bounds, *, past_limited: bool) -> list[tuple[str, str]]:
    """Whether a time (epoch ms) is one driftline can store and the window allows."""
    if not EARLIEST_TIME_MS <= ms <= LATEST_TIME_MS:
        return [(field, f"{ms} ms is outside 1900-01-01 .. 2299-12-31 (is it in milliseconds?)")]
    if ms > now_ms + bounds.max_future_ms:
        return [(field, f"{ms} ms is more than {bounds.max_future_ms} ms ahead of ingest's clock ({now_ms})")]
    if past_limited and bounds.max_past_ms is not None and ms < now_ms - bounds.max_past_ms:
        return [(field, f"{ms} ms is more than {bounds.max_past_ms} ms behind ingest's clock ({now_ms})")]
    return []
