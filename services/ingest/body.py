"""Split an ingest body into records, keeping the exact bytes received for each one.

A body is one JSON record or a JSON array of records. Every record that ingest
refuses is kept with the bytes the client sent for it, so this module never
re-serialises: for an array it finds where each top-level element starts and
ends and slices the body there.

It also makes parsing safe on hostile input, without recursion:

* nesting depth is measured with one regular-expression pass over the brackets
  outside strings *before* anything is parsed, so a body nested 10,000 deep is
  never handed to :mod:`json` (whose decoder recurses and would raise
  ``RecursionError``); a too-deep element is skipped by its bracket span and
  rejected on its own;
* integer literals longer than any 64-bit integer are not converted (Python
  refuses to turn more than 4,300 digits into an ``int`` and would raise
  ``ValueError`` mid-parse): they become :class:`OversizeInt` and the record
  holding them is rejected on its own;
* bytes that are not UTF-8 are decoded with ``surrogateescape``: inside a string
  they become lone surrogates, which the record bounds reject per record, and
  re-encoding the same way gives back the original bytes exactly.

Pure: bytes in, :class:`RawRecord` values out. Knows nothing of HTTP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: A JSON string (escapes included), a bracket, or a lone quote that starts a string never closed.
#: Possessive quantifiers: an unterminated string costs one linear scan, not a backtracking storm.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]|"', re.DOTALL)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: The longest integer literal that can still fit in 64 bits: "-9223372036854775808" has 20 characters.
_MAX_INT_LITERAL = 20
_BOM = "\ufeff"


class OversizeInt:
    """An integer literal too long for 64 bits, kept as its text instead of being converted."""

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"OversizeInt({len(self.digits)} characters)"


@dataclass(frozen=True)
class TooDeep:
    """Stands in for a record whose containers nest deeper than allowed; it is never parsed."""

    depth: int


@dataclass(frozen=True)
class RawRecord:
    """One record of a request.

    Attributes
    ----------
    index
        Position in the batch (0 for a body that is a single record).
    value
        The parsed JSON (dicts, lists, str, int, float, bool, None, :class:`OversizeInt`),
        or :class:`TooDeep` when it was not parsed.
    raw
        The exact bytes received for it; None for records handed over in process
        (see :func:`payload_of`).
    """

    index: int
    value: Any
    raw: bytes | None = None


@dataclass(frozen=True)
class BodyRejected:
    """The body as a whole cannot be split into records (``status`` 400 or 413)."""

    status: int
    message: str


def _parse_int(literal: str) -> int | OversizeInt:
    return OversizeInt(literal) if len(literal) > _MAX_INT_LITERAL else int(literal)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def payload_of(record: RawRecord) -> bytes:
    """The bytes to keep for ``record``: as received, or JSON for a record handed over in process."""
    if record.raw is not None:
        return record.raw
    if isinstance(record.value, TooDeep):
        return f"(an in-process record nested {record.value.depth} deep, not serialised)".encode()
    try:
        return json.dumps(record.value, default=repr).encode("utf-8", "backslashreplace")
    except (RecursionError, ValueError) as exc:  # a self-referencing or absurdly deep Python object
        return f"(an in-process record that cannot be serialised: {exc})".encode()


def split_body(body: bytes, max_depth: int, max_records: int) -> list[RawRecord] | BodyRejected:
    """The records of ``body``, each with its own bytes, or why the body as a whole is refused.

    Parameters
    ----------
    body
        The request body: one JSON value, or an array of them.
    max_depth
        Most containers nested in one record (a feature event is 2: the record and its
        feature maps). A deeper element is returned as :class:`TooDeep`, unparsed.
    max_records
        Most elements in an array; more refuses the body (413).

    Returns
    -------
    list of RawRecord, or BodyRejected
        400 when the body is not JSON (or not UTF-8 JSON outside strings), 413 when it
        holds more than ``max_records`` records.

    Examples
    --------
    >>> [r.raw for r in split_body(b' [1E12, {"a": "\\xc3\\xa9"} ] ', 8, 10)]
    [b'1E12', b'{"a": "\\xc3\\xa9"}']
    >>> split_body(b"[" * 50 + b"]" * 50, 8, 10)[0].value
    TooDeep(depth=49)
    """
    text = body.decode("utf-8", "surrogateescape")
    if text.startswith(_BOM):  # tolerated, as json.loads(bytes) did; not part of any record
        text = text[1:]
    start = _WHITESPACE.match(text).end()
    if start == len(text):
        return BodyRejected(400, "body is empty")
    spans = _container_spans(text)
    if isinstance(spans, BodyRejected):
        return spans
    if text[start] != "[":
        return _single(text, start, spans, max_depth)
    return _array(text, start, spans, max_depth, max_records)


@dataclass
class _Span:
    """A container seen by the bracket scan: where it ends (None: never closed) and how deep it nests."""

    end: int | None
    depth: int


def _container_spans(text: str) -> dict[int, _Span] | BodyRejected:
    """For the outermost container and every container directly inside it: its span and depth.

    One pass over the tokens outside strings, keeping only a counter (no stack of
    Python frames), so any depth costs the same as a flat body.
    """
    spans: dict[int, _Span] = {}
    outer: _Span | None = None
    inner: _Span | None = None
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        char = token[0]
        if char == '"':
            if len(token) == 1:
                return BodyRejected(400, f"body is not JSON: unterminated string starting at character {match.start()}")
            continue
        if char in "[{":
            depth += 1
            if depth == 1:
                outer = spans[match.start()] = _Span(None, 1)
            elif depth == 2:
                inner = spans[match.start()] = _Span(None, 1)
            if outer is not None and depth > outer.depth:
                outer.depth = depth
            if inner is not None and depth - 1 > inner.depth:
                inner.depth = depth - 1
        else:
            depth -= 1
            if depth < 0:
                return BodyRejected(400, f"body is not JSON: unbalanced {char!r} at character {match.start()}")
            if depth == 1 and inner is not None:
                inner.end, inner = match.end(), None
            elif depth == 0 and outer is not None:
                outer.end, outer = match.end(), None
    return spans


def _encode(text: str) -> bytes:
    """Back to the bytes received: exact, since the text was decoded the same way."""
    return text.encode("utf-8", "surrogateescape")


def _single(text: str, start: int, spans: dict[int, _Span], max_depth: int) -> list[RawRecord] | BodyRejected:
    body = _encode(text)
    span = spans.get(start)
    if span is not None and span.depth > max_depth:
        if span.end is None or text[span.end:].strip(" \t\n\r"):
            return BodyRejected(400, f"body is not JSON (and nests {span.depth} deep)")
        return [RawRecord(0, TooDeep(span.depth), body)]
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        return BodyRejected(400, f"body is not JSON: {exc}")
    if _WHITESPACE.match(text, end).end() != len(text):
        return BodyRejected(400, f"body is not JSON: extra data at character {end}")
    return [RawRecord(0, value, body)]


def _array(text: str, start: int, spans: dict[int, _Span], max_depth: int,
           max_records: int) -> list[RawRecord] | BodyRejected:
    records: list[RawRecord] = []
    pos = _WHITESPACE.match(text, start + 1).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            if len(records) == max_records:
                return BodyRejected(413, f"more than {max_records} records in one body; split the batch")
            span = spans.get(pos)
            if span is not None and span.depth > max_depth:
                if span.end is None:
                    return BodyRejected(400, f"body is not JSON: element {len(records)} nests "
                                             f"{span.depth} deep and is never closed")
                records.append(RawRecord(len(records), TooDeep(span.depth), _encode(text[pos:span.end])))
                end = span.end
            else:
                try:
                    value, end = _DECODER.raw_decode(text, pos)
                except (ValueError, RecursionError) as exc:
                    return BodyRejected(400, f"body is not JSON: element {len(records)}: {exc}")
                records.append(RawRecord(len(records), value, _encode(text[pos:end])))
            pos = _WHITESPACE.match(text, end).end()
            if text.startswith(",", pos):
                pos = _WHITESPACE.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            return BodyRejected(400, f"body is not JSON: expected ',' or ']' at character {pos}")
    if _WHITESPACE.match(text, pos).end() != len(text):
        return BodyRejected(400, f"body is not JSON: extra data at character {pos}")
    return records
