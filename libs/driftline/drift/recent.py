"""A bounded set of recently seen keys: how a consumer counts a replayed record once.

At-least-once delivery means a record can arrive twice: a producer killed between
its flush and its commit republishes its last batch. Such a replay follows the
original closely in the topic, so remembering the most recent keys (a cap on
how many, an age limit on how long) is enough to recognise it, in memory that
does not grow with the stream.

Examples
--------
>>> seen = RecentKeys(capacity=2)
>>> [seen.add(k, now_ms=0) for k in ("a", "b", "a", "c", "a")]
[True, True, False, True, True]
>>> "b" in seen, len(seen)
(False, 2)
>>> again = RecentKeys(capacity=2)
>>> again.restore(seen.snapshot())
>>> again.add("c", now_ms=0)
False
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RecentKeys:
    """The ``capacity`` most recently added keys, each kept at most ``max_age_ms`` (if given).

    Parameters
    ----------
    capacity
        Most keys kept; the oldest is forgotten first.
    max_age_ms
        Keys added longer ago than this (by the ``now_ms`` the caller passes) are forgotten.
    """

    def __init__(self, capacity: int, max_age_ms: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.max_age_ms = max_age_ms
        self._added: OrderedDict[Hashable, int] = OrderedDict()  # key -> when added (ms), oldest first

    def __contains__(self, key: Hashable) -> bool:
        return key in self._added

    def __len__(self) -> int:
        return len(self._added)

    def add(self, key: Hashable, now_ms: int) -> bool:
        """Remember ``key``; True when it was not remembered yet (the first time it counts)."""
        self._forget_older_than(now_ms)
        if key in self._added:
            return False
        self._added[key] = now_ms
        if len(self._added) > self.capacity:
            self._added.popitem(last=False)
        return True

    def _forget_older_than(self, now_ms: int) -> None:
        if self.max_age_ms is None:
            return
        while self._added:
            key, added = next(iter(self._added.items()))
            if added > now_ms - self.max_age_ms:
                return
            del self._added[key]

    def snapshot(self) -> list:
        """JSON-ready: ``[[key parts..., added_ms], ...]`` oldest first (tuple keys as lists)."""
        return [[*(key if isinstance(key, tuple) else (key,)), added] for key, added in self._added.items()]

    def restore(self, snapshot: list) -> None:
        self._added.clear()
        for *parts, added in snapshot[-self.capacity:]:
            self._added[tuple(parts) if len(parts) > 1 else parts[0]] = added
