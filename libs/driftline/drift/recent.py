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
>>> seen.unseen(["c", "d", "d", "e"])
['d', 'e']
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Hashable, Iterable
from itertools import chain
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses for a str


class _Chunk:
    """Keys added at one ``now_ms``, in order; ``keys[start:]`` are still remembered."""

    __slots__ = ("keys", "added", "start", "json")

    def __init__(self, keys: list, added: int):
        self.keys = keys
        self.added = added
        self.start = 0
        self.json: bytes | None = None  # the JSON entries of all of ``keys`` (computed once, on demand)

    def entries_json(self) -> bytes:
        """This chunk's remembered keys as :meth:`RecentKeys.snapshot` entries, comma-separated."""
        if self.start:
            return _entries_json(self.keys[self.start:], self.added).encode()
        if self.json is None:
            self.json = _entries_json(self.keys, self.added).encode()
        return self.json


def _entries_json(keys: list, added: int) -> str:
    """``[key parts..., added], ...`` for ``keys`` (without the enclosing brackets)."""
    if not keys:
        return ""
    kinds = set(map(type, keys))
    between = f", {int(added)}], ["
    # Keys of strings (or tuples of strings of one length), the usual case: each string encoded
    # by json's own C encoder, the entries joined around them, no Python call per key.
    if kinds == {str}:
        return "[" + between.join(map(_json_string, keys)) + between[:-3]
    if kinds == {tuple} and set(map(type, chain.from_iterable(keys))) == {str}:
        lengths = set(map(len, keys))
        if len(lengths) == 1 and (width := lengths.pop()) > 0:
            strings = iter(map(_json_string, chain.from_iterable(keys)))
            return "[" + between.join(map(", ".join, zip(*[strings] * width))) + between[:-3]
    return json.dumps([[*key, added] if isinstance(key, tuple) else [key, added] for key in keys])[1:-1]


class RecentKeys:
    """The ``capacity`` most recently added keys, each kept at most ``max_age_ms`` (if given).

    Keys are held in chunks, one per ``now_ms`` they were added at (a consumer adds a batch's
    keys at once): remembering is a set look-up, forgetting the oldest drops chunks from the
    front, and :meth:`snapshot_json` encodes each chunk once, so snapshotting tens of thousands
    of keys every second costs little more than joining strings.

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
        self._keys: set[Hashable] = set()
        self._chunks: deque[_Chunk] = deque()  # oldest first

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def isdisjoint(self, keys: Iterable[Hashable]) -> bool:
        """True when none of ``keys`` is remembered."""
        return self._keys.isdisjoint(keys)

    def unseen(self, keys: Iterable[Hashable]) -> list[Hashable]:
        """The keys not remembered, each once, in order of first appearance (nothing is added)."""
        known = self._keys
        return [k for k in dict.fromkeys(keys) if k not in known]

    def add(self, key: Hashable, now_ms: int) -> bool:
        """Remember ``key``; True when it was not remembered yet (the first time it counts)."""
        self._forget_older_than(now_ms)
        if key in self._keys:
            return False
        self._append([key], now_ms)
        return True

    def add_many(self, keys: Iterable[Hashable], now_ms: int) -> None:
        """Remember every key of ``keys`` (in order; those already remembered stay where they are)."""
        self._forget_older_than(now_ms)
        new = self.unseen(keys)
        if new:
            self._append(new, now_ms)

    def add_new(self, keys: list[Hashable], now_ms: int) -> None:
        """Remember ``keys`` known to be distinct and not remembered (as :meth:`unseen` returns
        them, with nothing added since): :meth:`add_many` without checking again."""
        self._forget_older_than(now_ms)
        if keys:
            self._append(list(keys), now_ms)

    def _append(self, new: list, now_ms: int) -> None:
        tail = self._chunks[-1] if self._chunks else None
        if tail is not None and tail.added == now_ms:
            tail.keys.extend(new)
            tail.json = None
        else:
            self._chunks.append(_Chunk(new, now_ms))
        self._keys.update(new)
        self._forget_beyond_capacity()

    def _forget_beyond_capacity(self) -> None:
        excess = len(self._keys) - self.capacity
        while excess > 0:
            head = self._chunks[0]
            take = min(excess, len(head.keys) - head.start)
            self._keys.difference_update(head.keys[head.start:head.start + take])
            head.start += take
            excess -= take
            if head.start == len(head.keys):
                self._chunks.popleft()

    def _forget_older_than(self, now_ms: int) -> None:
        if self.max_age_ms is None:
            return
        while self._chunks and self._chunks[0].added <= now_ms - self.max_age_ms:
            head = self._chunks.popleft()
            self._keys.difference_update(head.keys[head.start:])

    def snapshot(self) -> list:
        """JSON-ready: ``[[key parts..., added_ms], ...]`` oldest first (tuple keys as lists)."""
        return [[*key, c.added] if isinstance(key, tuple) else [key, c.added]
                for c in self._chunks for key in c.keys[c.start:]]

    def snapshot_json(self) -> bytes:
        """:meth:`snapshot` as JSON (UTF-8), each chunk encoded once and reused by later snapshots."""
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> list[bytes]:
        """:meth:`snapshot_json` in pieces, for a caller that joins them into a larger document
        (one copy of tens of megabytes instead of several)."""
        parts = [b"["]
        for chunk in self._chunks:
            entries = chunk.entries_json()
            if entries:
                parts += (entries, b",")
        parts[-1] = b"]"  # the last comma, or the opening bracket of an empty list
        return parts if len(parts) > 1 else [b"[]"]

    def restore(self, snapshot: list) -> None:
        """Resume from :meth:`snapshot` (or :meth:`snapshot_json`, parsed)."""
        self._keys = set()
        self._chunks = deque()
        for *parts, added in snapshot[-self.capacity:]:
            key = tuple(parts) if len(parts) > 1 else parts[0]
            if key in self._keys:
                continue
            tail = self._chunks[-1] if self._chunks else None
            if tail is not None and tail.added == added:
                tail.keys.append(key)
            else:
                self._chunks.append(_Chunk([key], added))
            self._keys.add(key)
