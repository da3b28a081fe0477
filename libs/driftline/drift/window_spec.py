"""How a stream is cut into windows: tumbling or hopping, by event count or event time."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WindowSpec"]


@dataclass(frozen=True)
class WindowSpec:
    """How a stream is cut into windows.

    Window ``k`` covers ``[k * step, k * step + size)`` in the window coordinate: the
    event time in milliseconds (``by="time"``, windows aligned on the epoch, as in Kafka
    Streams and Flink) or the event's index in the stream counting from 0
    (``by="count"``). Tumbling windows have ``step == size``; hopping windows overlap
    and every event belongs to ``ceil(size / step)`` windows (``step <= size``).
    Because windows are aligned on multiples of ``step``, the first hopping windows of
    a stream start before its first event and hold fewer events
    (``AlertPolicy(min_events=...)`` ignores such small windows).

    ``allowed_lateness`` (ms, time windows only): window ``[s, e)`` closes (is emitted,
    and accepts nothing more) once ``watermark >= e + allowed_lateness``. The watermark
    is the largest event time seen (one ordered stream) or, in the drift-detector, the
    minimum over the partitions it reads (:class:`~driftline.drift.watermark.PartitionWatermarks`,
    where an event far ahead cannot move it). An out-of-order event still counts in
    every window of it that is open; for a window already closed it is counted in that
    window's ``late_events`` (:meth:`WindowedProfileCounter.take_event_counts`), never
    dropped silently.

    Examples
    --------
    >>> WindowSpec(kind="hopping", by="time", size=60_000, step=15_000, allowed_lateness=5_000).hop
    15000
    >>> WindowSpec(kind="tumbling", by="count", size=1000).hop
    1000

    """

    kind: str = "tumbling"
    by: str = "count"
    size: int = 10_000
    step: int | None = None
    allowed_lateness: int = 0

    def __post_init__(self):
        if self.kind not in ("tumbling", "hopping"):
            raise ValueError(f"kind must be 'tumbling' or 'hopping', got {self.kind!r}")
        if self.by not in ("count", "time"):
            raise ValueError(f"by must be 'count' or 'time', got {self.by!r}")
        if int(self.size) != self.size or self.size < 1:
            raise ValueError("size must be a positive integer")
        if self.kind == "tumbling":
            if self.step not in (None, self.size):
                raise ValueError("a tumbling window's step is its size")
        else:
            if self.step is None or int(self.step) != self.step or not 1 <= self.step <= self.size:
                raise ValueError("a hopping window needs an integer step with 1 <= step <= size")
        if self.allowed_lateness < 0:
            raise ValueError("allowed_lateness must be >= 0")
        if self.by == "count" and self.allowed_lateness:
            raise ValueError("allowed_lateness applies to time windows only")

    @property
    def hop(self) -> int:
        """Distance between the starts of two consecutive windows."""
        return int(self.size if self.step is None else self.step)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "by": self.by, "size": int(self.size), "step": self.step,
                "allowed_lateness": int(self.allowed_lateness)}

    @classmethod
    def from_dict(cls, d: dict) -> WindowSpec:
        return cls(**d)
