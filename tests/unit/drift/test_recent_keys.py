"""RecentKeys (the drift-detector's dedupe memory) in chunks behaves as the plain ordered
memory it replaced, and its snapshot, encoded chunk by chunk, is the same JSON."""

from __future__ import annotations

import json
from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.drift.recent import RecentKeys, _entries_json


class Reference:
    """The previous implementation: one OrderedDict of key -> time added."""

    def __init__(self, capacity, max_age_ms=None):
        self.capacity, self.max_age_ms, self.added = capacity, max_age_ms, OrderedDict()

    def forget(self, now_ms):
        if self.max_age_ms is not None:
            while self.added and next(iter(self.added.values())) <= now_ms - self.max_age_ms:
                self.added.popitem(last=False)

    def add(self, key, now_ms):
        self.forget(now_ms)
        if key in self.added:
            return False
        self.added[key] = now_ms
        if len(self.added) > self.capacity:
            self.added.popitem(last=False)
        return True

    def snapshot(self):
        return [[*(k if isinstance(k, tuple) else (k,)), t] for k, t in self.added.items()]


# Keys that could confuse a JSON splice: quotes, backslashes, brackets, the separators themselves.
text = st.text(alphabet=st.sampled_from(list('ab", []\\é\u2028')), max_size=5)
keys = st.one_of(text, st.tuples(text, text))
ops = st.lists(st.tuples(st.sampled_from(["add", "many", "snapshot", "restore"]), st.lists(keys, max_size=6),
                         st.integers(0, 3)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops=ops, capacity=st.integers(1, 7), max_age_ms=st.one_of(st.none(), st.integers(1, 6)))
def test_chunks_behave_as_the_ordered_memory_and_snapshot_to_the_same_json(ops, capacity, max_age_ms):
    """``add`` as before; ``add_many`` forgets the keys too old, then adds, in order, each key of
    the batch not remembered then (a repeat within the batch counts once)."""
    ours, ref = RecentKeys(capacity, max_age_ms), Reference(capacity, max_age_ms)
    now = 0
    for op, batch, step in ops:
        now += step
        if op == "add":
            assert [ours.add(k, now) for k in batch] == [ref.add(k, now) for k in batch]
        elif op == "many":
            assert ours.unseen(batch) == [k for k in dict.fromkeys(batch) if k not in ref.added]
            ours.add_many(batch, now)
            ref.forget(now)  # keys too old are forgotten first, then the batch judged against the rest
            for k in [k for k in dict.fromkeys(batch) if k not in ref.added]:
                ref.add(k, now)
        elif op == "snapshot":
            assert json.loads(ours.snapshot_json()) == ours.snapshot() == ref.snapshot()
        else:  # restore from the JSON text, as the detector does
            again = RecentKeys(capacity, max_age_ms)
            again.restore(json.loads(ours.snapshot_json()))
            ours = again
        assert len(ours) == len(ref.added) and all(k in ours for k in ref.added)
    assert json.loads(ours.snapshot_json()) == ref.snapshot()


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.one_of(keys, st.tuples(text), st.integers(), st.tuples(text, st.integers())), max_size=8),
       added=st.integers(-10, 2**45))
def test_each_chunk_encodes_as_json_would(batch, added):
    batch = list(dict.fromkeys(batch))
    expected = [[*k, added] if isinstance(k, tuple) else [k, added] for k in batch]
    assert json.loads("[" + _entries_json(batch, added) + "]") == expected


def test_a_snapshot_reuses_the_chunks_it_encoded_and_matches_the_previous_format():
    seen = RecentKeys(capacity=5)
    seen.add_many([("m", "a"), ("m", "b"), ("m", "c")], now_ms=10)
    first = seen.snapshot_json()
    chunk = seen._chunks[0]
    assert chunk.json is not None  # encoded once; the next snapshot joins the same bytes
    seen.add_new([("m", "d"), ("m", "e"), ("m", "f")], now_ms=20)  # the oldest key is forgotten
    assert json.loads(first) == [["m", "a", 10], ["m", "b", 10], ["m", "c", 10]]
    assert json.loads(seen.snapshot_json()) == [["m", "b", 10], ["m", "c", 10], ["m", "d", 20], ["m", "e", 20],
                                                ["m", "f", 20]]
    assert ("m", "a") not in seen and ("m", "b") in seen and len(seen) == 5
