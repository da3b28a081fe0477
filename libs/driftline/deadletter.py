"""Dead letters: a record we could not process, kept with its original bytes and the reason."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from driftline.timeutil import now_ms, to_datetime


def dead_letter(service: str, source: str, payload: bytes, error: str, *, partition: int | None = None,
                offset: int | None = None, key: bytes | None = None) -> dict[str, Any]:
    """A DeadLetter record.

    A record read from the bus (``offset`` given) gets an id stable for its position, so a
    replay of the batch writes the same row again instead of a second one. Any other record
    (ingest's, received over HTTP or in process) gets a unique id: the same bytes rejected
    twice are two rejections and two rows, never collapsed into one.
    """
    if offset is not None:
        dead_letter_id = hashlib.sha256(f"{service}|{source}|{partition}|{offset}".encode()).hexdigest()[:32]
    else:
        dead_letter_id = uuid.uuid4().hex
    return {
        "dead_letter_id": dead_letter_id,
        "service": service,
        "topic": source,
        "partition": partition,
        "offset": offset,
        "key": key,
        "payload": payload,
        # The reason may quote the input (a field name with a lone surrogate): kept encodable.
        "error": error.encode("utf-8", "backslashreplace").decode("utf-8"),
        "received_at": now_ms(),
    }


def dead_letter_row(record: dict[str, Any]) -> dict[str, Any]:
    """The ``dead_letters`` table row for a DeadLetter record (bytes kept as-is)."""
    return {**record, "received_at": to_datetime(record["received_at"])}
