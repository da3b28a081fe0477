"""Ingest's fast path (services/ingest/plain.py) decides exactly as the per-record path does.

Every batch here goes through ``Ingest`` twice: with the fast path, and with
``prove_plain=False`` (bounds walk, pydantic, contract, window for each record).
Candidates and rejections (index, event_id, status, errors, payload) must be
identical, for plain records and for every kind of odd one mixed in.
Feature names are not the demo's: a small "gearbox" model.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from driftline.contract import FeatureContract
from driftline.services.ingest.body import RawRecord
from driftline.services.ingest.bounds import Bounds
from driftline.services.ingest.logic import Ingest
from driftline.services.ingest.plain import GROUP, PlainEvents, PlainLabels

NOW = 1_800_000_000_000
GEARBOX = FeatureContract(numeric=("torque", "oil_temp", "rpm"), categorical=("site", "shift"), optional=("rpm",))
WEAR = FeatureContract(numeric=("torque",), task="regression")
CONTRACTS = {"gearbox": GEARBOX, "wear": WEAR}


def event(i: int, **changes) -> dict:
    record = {"model": "gearbox", "event_id": f"g-{i}", "entity_id": f"unit-{i % 7}", "event_time": NOW - 1000 * i,
              "numeric_features": {"torque": 10.5 + i, "oil_temp": 71.25, "rpm": 1500.0},
              "categorical_features": {"site": "north", "shift": "night"}}
    record.update(changes)
    return record


def label(i: int, **changes) -> dict:
    record = {"model": "gearbox", "event_id": f"g-{i}", "label": "1" if i % 2 else "0", "label_time": NOW - 10 * i}
    record.update(changes)
    return record


def odd_events() -> list[dict]:
    """Records the fast path must leave to the per-record path (most are rejected there)."""
    base = event(0)
    with_features = lambda **f: {**base, "numeric_features": {**base["numeric_features"], **f}}  # noqa: E731
    with_categories = lambda **c: {**base, "categorical_features": {**base["categorical_features"], **c}}  # noqa: E731
    missing = copy.deepcopy(base)
    del missing["numeric_features"]["torque"]
    optional_absent = copy.deepcopy(base)
    del optional_absent["numeric_features"]["rpm"]
    no_categoricals = {k: v for k, v in base.items() if k != "categorical_features"}
    return [
        with_features(torque=3), with_features(torque=np.float64(2.5)), with_features(torque=float("nan")),
        with_features(torque=float("inf")), with_features(torque=1e308, oil_temp=1e308), with_features(torque=True),
        with_features(torque="3.5"), with_features(torque=None), with_features(vibration=0.1),
        with_categories(site="nörth"), with_categories(site="\udcff"), with_categories(site=""),
        with_categories(site=3), with_categories(site="x" * 2000), with_categories(torque="a"),
        {**base, "numeric_features": {"torqué": 1.0, "oil_temp": 1.0}},
        {**base, "model": ""}, {**base, "model": "unknown"}, {**base, "model": 7}, {**base, "event_id": "é"},
        {**base, "event_id": "x" * 1025}, {**base, "entity_id": None},
        {**base, "event_time": True}, {**base, "event_time": 1.8e12}, {**base, "event_time": "2027-01-15T08:00:00Z"},
        {**base, "event_time": NOW + 2 * 86_400_000}, {**base, "event_time": 10**14}, {**base, "event_time": 2**70},
        {**base, "event_time": NOW - 4000 * 86_400_000},
        {**base, "extra": 1}, no_categoricals, missing, optional_absent, {**base, "numeric_features": [1.0]},
        {**base, "numeric_features": {"torque": {"deep": 1.0}, "oil_temp": 1.0}},
        "not a record", None, [event(1)], 12,
    ]


def odd_labels() -> list[dict]:
    base = label(0)
    untimed = {k: v for k, v in base.items() if k != "label_time"}
    return [
        untimed, {**base, "label": 1}, {**base, "label": True}, {**base, "label": None}, {**base, "label": ""},
        {**base, "value": 2.5}, {**base, "model": "wear"}, {**base, "model": "wear", "label": "2.5"},
        {**base, "model": "unknown"}, {**base, "label_time": None}, {**base, "label_time": "2027-01-15T08:00:00Z"},
        {**base, "label_time": NOW + 2 * 86_400_000}, {**base, "label_time": 10}, {**base, "event_id": ""},
        {**base, "label": "\udcff"}, {**base, "extra": 1}, {"model": "gearbox"}, [], "x",
    ]


def outcome(validation) -> tuple:
    return ([(c.index, c.record, c.payload) for c in validation.candidates],
            [(r.index, r.event_id, r.status, r.errors, r.payload) for r in validation.rejected])


def both(records: list, kind: str, bounds: Bounds | None = None) -> tuple[tuple, tuple]:
    raw = [RawRecord(i, v) for i, v in enumerate(records)]
    fast = Ingest(CONTRACTS.get, bounds, clock=lambda: NOW)
    slow = Ingest(CONTRACTS.get, bounds, clock=lambda: NOW, prove_plain=False)
    return outcome(getattr(fast, kind)(raw)), outcome(getattr(slow, kind)(raw))


def test_a_plain_batch_is_accepted_as_the_per_record_path_accepts_it():
    records = [event(i) for i in range(100)]
    records[5]["numeric_features"] = dict(reversed(records[5]["numeric_features"].items()))  # any key order
    fast, slow = both(records, "events")
    assert fast == slow
    assert len(fast[0]) == 100 and not fast[1]
    assert list(fast[0][5][1]["numeric_features"]) == ["oil_temp", "rpm", "torque"]  # canonical: key order
    # ...and it was the fast path that proved them all
    assert len(PlainEvents(CONTRACTS.get, Bounds())(records, NOW)) == 100
    assert len(PlainLabels(CONTRACTS.get, Bounds())([label(i) for i in range(50)], NOW)) == 50


@pytest.mark.parametrize("position", [0, 17, GROUP, 99])
def test_each_odd_event_in_a_plain_batch_is_decided_as_alone(position):
    for odd in odd_events():
        records = [event(i) for i in range(100)]
        records[position] = odd
        fast, slow = both(records, "events")
        assert fast == slow, odd
        assert len(PlainEvents(CONTRACTS.get, Bounds())(records, NOW)) >= 99  # the others stay on the fast path


def test_a_batch_of_only_odd_events_is_decided_record_by_record():
    records = odd_events() * 3
    random.Random(12).shuffle(records)
    fast, slow = both(records, "events")
    assert fast == slow
    assert len(fast[1]) > len(records) // 2  # most are rejected, each with its own errors


@pytest.mark.parametrize("position", [0, 40])
def test_each_odd_label_in_a_plain_batch_is_decided_as_alone(position):
    for odd in odd_labels():
        records = [label(i) for i in range(50)]
        records[position] = odd
        fast, slow = both(records, "labels")
        assert fast == slow, odd


@pytest.mark.parametrize("bounds", [Bounds(max_abs_number=100.0), Bounds(max_string_chars=4), Bounds(max_features=2),
                                    Bounds(max_depth=1), Bounds(max_depth=0), Bounds(max_past_ms=None, max_future_ms=0),
                                    Bounds(max_string_chars=12)])  # 12: shorter than "numeric_features"
def test_tighter_bounds_are_held_on_the_fast_path_too(bounds):
    fast, slow = both([event(i) for i in range(40)] + odd_events(), "events", bounds)
    assert fast == slow
    fast, slow = both([label(i) for i in range(40)] + odd_labels(), "labels", bounds)
    assert fast == slow
