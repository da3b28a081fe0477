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
    deadline_s
        How long one request waits for the bus to acknowledge its records; past it, the
        records still unacknowledged are answered 503 as in flight (not as refused).
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
    deadline_s: float = 10.0

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


#: A field path while walking: None for the record itself, else (parent path, key). Rendered
#: only when a problem is found, so a clean record costs no string building.
Path = tuple | None


def _render(path: Path) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(_name(key))
    return ".".join(reversed(keys)) or "(record)"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def value_problems(value: Any, bounds: Bounds) -> list[tuple[str, str]]:
    """``(field, message)`` for every value in ``value`` that breaks ``bounds``; empty if none.

    Walks with an explicit stack, so no input can exhaust Python's recursion limit. It runs
    on every record of every batch (the embedded demo's too), so the common case — plain
    str, float, int, dict — is tested by exact type first.

    Examples
    --------
    >>> value_problems({"a": [1, 2**70], "b": float("inf")}, Bounds())
    [('a.1', 'integer outside 64 bits'), ('b', 'number is not finite (NaN, Infinity, or beyond ±1.8e308)')]
    """
    if isinstance(value, TooDeep):
        return [("(record)", f"nested {value.depth} deep; at most {bounds.max_depth}")]
    problems: list[tuple[Path, str]] = []
    leaf = _LeafCheck(bounds)
    problem = leaf(value)
    if problem is _CONTAINER:
        value = dict(value) if isinstance(value, dict) else list(value)
    elif problem is not None:  # a record that is itself a scalar (or an odd type)
        problems.append((None, problem))
    # Containers only go on the stack; their scalar members are checked on the spot.
    stack: list[tuple[Any, Path, int]] = [(value, None, 1)] if type(value) in (dict, list) else []
    while stack and len(problems) < MAX_PROBLEMS:
        item, path, depth = stack.pop()
        if depth > bounds.max_depth:
            problems.append((path, f"nested deeper than {bounds.max_depth}"))
            continue
        if type(item) is dict:
            if leaf.flat_and_fine(item):
                continue
            members = item.items()
            for key, child in ([] if leaf.keys_fine(item) else members):
                if type(key) is not str:  # only in-process callers can hand over such keys
                    problems.append(((path, key), "a key that is not a string"))
                elif not leaf.fine_string(key):
                    # keys are strings too: the same limits, reported under the key
                    problems.extend(((path, key), m) for m in _string_problems(key, bounds))
        else:
            members = enumerate(item)
        for key, child in members:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, (path, key), depth + 1))
            elif (problem := leaf(child)) is not None:
                if problem is _CONTAINER:  # a subclass of dict or list, or a tuple: walked as one
                    stack.append((dict(child) if isinstance(child, dict) else list(child), (path, key), depth + 1))
                else:
                    problems.append(((path, key), problem))
    return sorted((_render(path), message) for path, message in problems[:MAX_PROBLEMS])


_CONTAINER = "(container)"


class _LeafCheck:
    """Checks one non-container value; None when it is fine. Exact types first: it runs on every
    value of every record (the embedded demo's too)."""

    def __init__(self, bounds: Bounds):
        self.max_chars, self.max_abs = bounds.max_string_chars, bounds.max_abs_number

    def keys_fine(self, mapping: dict) -> bool:
        """Whether every key is a short ASCII string (the usual case), checked at C speed."""
        try:
            return not mapping or ("".join(mapping).isascii() and max(map(len, mapping)) <= self.max_chars)
        except TypeError:  # a key that is not a string
            return False

    def flat_and_fine(self, mapping: dict) -> bool:
        """Whether ``mapping`` is a feature map that passes: short ASCII keys, and values all
        plain finite floats or all short ASCII strings. Checked with C-speed builtins, so a
        well-formed event costs a few microseconds; anything else takes the per-value walk."""
        if not mapping:
            return True
        if not self.keys_fine(mapping):
            return False
        values = mapping.values()
        kinds = set(map(type, values))
        if kinds == {float}:
            # A NaN or an infinity makes the sum non-finite; so can an overflow of finite
            # values, which then takes the slow path and passes there.
            return math.isfinite(sum(values)) and (self.max_abs is None or max(map(abs, values)) <= self.max_abs)
        if kinds == {str}:
            return "".join(values).isascii() and max(map(len, values)) <= self.max_chars
        return False

    def fine_string(self, text: str) -> bool:
        return len(text) <= self.max_chars and (text.isascii() or _utf8(text))

    def __call__(self, item: Any) -> str | None:
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return "number is not finite (NaN, Infinity, or beyond ±1.8e308)"
        elif kind is str:
            if not self.fine_string(item):
                return "; ".join(_string_problems(item, self))
            return None
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return "integer outside 64 bits"
        elif item is None or kind is bool or kind is dict or kind is list:
            return None
        elif isinstance(item, OversizeInt):
            return "integer outside 64 bits"
        elif isinstance(item, (dict, list, tuple)):
            return _CONTAINER
        elif isinstance(item, (str, int, float)):  # numpy floats, str enums... from in-process callers
            return self(str(item) if isinstance(item, str) else float(item) if isinstance(item, float) else int(item))
        else:  # only in-process callers can hand over other types
            return f"not a JSON value ({type(item).__name__})"
        if self.max_abs is not None and abs(item) > self.max_abs:
            return f"magnitude above {self.max_abs:g}"
        return None


def _string_problems(text: str, bounds: Bounds | _LeafCheck) -> list[str]:
    limit = bounds.max_string_chars if isinstance(bounds, Bounds) else bounds.max_chars
    problems = []
    if len(text) > limit:
        problems.append(f"string of {len(text)} characters; at most {limit}")
    if not _utf8(text):
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
