"""Dead letters: a record we could not process, kept with its original bytes and the reason."""

from __future__ import annotations

import hashlib
from typing import Any

from driftline.timeutil import now_ms, to_datetime


def dead_letter(service: str, source: str, payload: bytes, error: str, *, partition: int | None = None,
                offset: int | None = None, key: bytes | None = None) -> dict[str, Any]:
    """A DeadLetter record. Its id is stable for one bus position (or one payload and error),
    so a replay writes the same row again instead of a second one."""
    if offset is not None:
        identity = f"{service}|{source}|{partition}|{offset}".encode()
    else:
        identity = b"|".join([service.encode(), source.encode(), payload, error.encode()])
    return {
        "dead_letter_id": hashlib.sha256(identity).hexdigest()[:32],
        "service": service,
        "topic": source,
        "partition": partition,
        "offset": offset,
        "key": key,
        "payload": payload,
        "error": error,
        "received_at": now_ms(),
    }


def dead_letter_row(record: dict[str, Any]) -> dict[str, Any]:
    """The ``dead_letters`` table row for a DeadLetter record (bytes kept as-is)."""
    return {**record, "received_at": to_datetime(record["received_at"])}
