"""Epoch milliseconds everywhere on the wire; Avro's timestamp-millis decodes to datetimes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: datetime | int | float) -> int:
    """Epoch milliseconds from epoch ms or a datetime (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return (value - EPOCH) // _MS
    return int(value)


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

