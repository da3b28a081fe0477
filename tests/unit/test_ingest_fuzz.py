"""Hypothesis over ingest bodies: whatever arrives, ingest answers for every record and loses none.

For every generated body, through the HTTP app:

* the answer is never a 5xx other than 503 (and never a 500);
* every record of a batch is in exactly one of ``accepted_indexes``,
  ``already_accepted`` or ``rejected``;
* ``accepted`` equals the number of records that reached the features topic, and
  they are exactly the records at ``accepted_indexes``;
* every rejected record is in ``dead_letters`` with the exact bytes sent for it
  and a reason; a body refused as a whole is kept whole; the new dead letters all
  have distinct ids, so ``FINAL`` never collapses two of them;
* an ``already_accepted`` record is one that an earlier request got accepted.

Each example runs against a fresh in-process bus whose capacity is drawn too,
so ``BusFull`` (on the features topic and on ``dlq``) is part of the input
space. The store and the registered model are shared by the whole module.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from driftline.bus.memory import MemoryBus
from driftline.config import Settings
from driftline.entry.demo import feature_events, train_first_model
from driftline.entry.embedded import Embedded
from driftline.entry.scenario import CreditScenario
from driftline.services.ingest.app import create_app
from driftline.services.ingest.gateway import IngestGateway
from driftline.topics import ALL_TOPICS, FEATURES

# Hypothesis caches what it learns under ./.hypothesis (even with database=None it keeps the
# constants it mined from the code there): keep it out of the checkout.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="driftline-hypothesis-"))
FUZZ = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def examples(n: int) -> int:
    """``n`` scaled by DRIFTLINE_FUZZ_SCALE.

    Each example is one HTTP request, and each costs a few chDB round trips (~10 ms an
    insert here): the default, 570 bodies holding about 2,500 records, runs in about a
    minute on two cores; DRIFTLINE_FUZZ_SCALE=4 (about 10,000 records) for a longer hunt.
    """
    return max(1, int(n * float(os.environ.get("DRIFTLINE_FUZZ_SCALE", "1"))))


TEMPLATES = feature_events(CreditScenario().generate(0, 40))
FRESH_IDS = itertools.count()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # The store on tmpfs when there is one: chDB spends half of each insert syncing to disk,
    # and every example inserts; the semantics are the same.
    shm = Path("/dev/shm")
    home = Path(tempfile.mkdtemp(prefix="driftline-fuzz-", dir=shm)) if shm.is_dir() else tmp_path_factory.mktemp("fuzz")
    app = Embedded(Settings(home=home / "home"))
    train_first_model(app, CreditScenario(), rows=1500)
    # One HTTP app for the module; each example swaps in the producers of a fresh bus.
    gateway = IngestGateway(app.ingest.ingest, app.bus.producer(), app.codec, app.store)
    with TestClient(create_app(gateway)) as client:
        state = World(app, gateway, client, accepted_bytes=[], accepted_ids=set(), seen_dead_ids=set())
        yield state
    try:
        # Never collapsed: as many rows under FINAL as rows at all, one per rejection seen.
        final = app.store.scalar("SELECT count() FROM dead_letters FINAL")
        assert final == app.store.scalar("SELECT count() FROM dead_letters") == len(state.seen_dead_ids)
        print(f"\ningest fuzz: {state.bodies} bodies, {state.records} records, {final} dead letters")
    finally:
        app.close()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class World:
    app: Embedded
    gateway: IngestGateway
    client: TestClient
    accepted_bytes: list[bytes]  # records accepted so far, to send again as retries
    accepted_ids: set[str]
    seen_dead_ids: set[str]
    bodies: int = 0
    records: int = 0


# -- what a record can be -----------------------------------------------------------------------

#: Raw JSON spellings of values that broke ingest before, or sit at a bound.
NASTY = [
    b"1E12", b"1e12", b"1E+12", b"1.0E12", b"0.1e13", b"1000000000000", b"1000000000000.0", b"10E11",
    str(2**70).encode(), str(10**17).encode(), str(-(2**63) - 1).encode(), str(2**63 - 1).encode(),
    b"9" * 5000, b"-" + b"9" * 30, b"1e400", b"-1e400", b"1e308", b"NaN", b"Infinity", b"-Infinity",
    b"-0.0", b"0", b"true", b"null", b'""', b'"\\ud800"', b'"a\\udfffb"', b'"\xff\xfe"', b'"\xed\xa0\x80"',
    b'"' + b"x" * 2000 + b'"', b'"2026-01-01T00:00:00Z"', b'"2999-01-01T00:00:00Z"', b'"1900-01-01T00:00:00Z"',
    b'"not a time"', b"[]", b"{}", b'{"a": 1}', b"[" * 40 + b"]" * 40, b"1767225600000", b"1767225600000.5",
]
FIELDS = ["model", "event_id", "entity_id", "event_time", "numeric_features", "categorical_features", "extra"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _dumps(value, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _object(fields: list[tuple[str, bytes]], compact: bool) -> bytes:
    sep, colon = (b",", b":") if compact else (b", ", b": ")
    return b"{" + sep.join(json.dumps(k).encode() + colon + v for k, v in fields) + b"}"


@dataclass(frozen=True)
class Element:
    """How to write one record; ``render`` gives its bytes once it has a fresh event id."""

    template: int
    mutations: tuple[tuple[str, bytes | None], ...] = ()  # field -> raw JSON (None: drop the field)
    spelled: tuple[str, bytes] | None = None  # a numeric feature written with this literal
    compact: bool = False
    raw: bytes | None = None  # the whole element, verbatim (deep, arbitrary)

    def render(self, event_id: str) -> bytes:
        if self.raw is not None:
            return self.raw
        event = dict(TEMPLATES[self.template], event_id=event_id)
        numeric = [(k, json.dumps(v).encode()) for k, v in event.pop("numeric_features").items()]
        if self.spelled is not None:
            numeric = [(k, self.spelled[1] if k == self.spelled[0] else v) for k, v in numeric]
        fields = {k: json.dumps(v).encode() for k, v in event.items()}
        fields["numeric_features"] = _object(numeric, self.compact)
        for name, value in self.mutations:
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
        return _object(list(fields.items()), self.compact)


templates = st.integers(0, len(TEMPLATES) - 1)
valid = st.builds(Element, templates, spelled=st.none() | st.tuples(st.sampled_from(["income", "age"]),
                                                                      st.sampled_from(NASTY[:8])),
                  compact=st.booleans())
mutated = st.builds(
    Element, templates,
    mutations=st.lists(st.tuples(st.sampled_from(FIELDS),
                                 st.none() | st.sampled_from(NASTY) | st.builds(_dumps, json_values, st.booleans())),
                       min_size=1, max_size=3).map(tuple),
    compact=st.booleans())
many_features = st.builds(lambda t, n: Element(t, mutations=(("categorical_features", _object(
    [(f"c{i}", b'"v"') for i in range(n)], True)),)), templates, st.sampled_from([1100, 3000]))
deep = st.builds(lambda k, kind: Element(0, raw=(b"[" * k + b"]" * k) if kind else (b'{"a":' * k + b"1" + b"}" * k)),
                 st.sampled_from([2, 31, 32, 33, 34, 100, 999, 1000, 1001, 10_000, 20_000]), st.booleans())
arbitrary = st.builds(lambda v, a: Element(0, raw=_dumps(v, a)), json_values, st.booleans())
elements = st.one_of(valid, valid, mutated, mutated, many_features, deep, arbitrary)


@dataclass(frozen=True)
class Reuse:
    """A record that repeats another: an earlier one of the batch (same bytes, or same id with other
    content), or one accepted by an earlier request (a client retry)."""

    kind: str  # "same", "same_id", "retry"
    which: int


reuses = st.builds(Reuse, st.sampled_from(["same", "same_id", "retry"]), st.integers(0, 10_000))
whitespace = st.sampled_from([b"", b" ", b"\n", b"\t \r\n"])
capacities = st.one_of(st.just(64 << 20), st.just(64 << 20), st.integers(0, 4000))


def materialise(world: World, plan: list[Element | Reuse]) -> list[bytes]:
    out: list[bytes] = []
    for item in plan:
        if isinstance(item, Element):
            out.append(item.render(f"fz-{next(FRESH_IDS)}"))
        elif item.kind == "retry" and world.accepted_bytes:
            out.append(world.accepted_bytes[item.which % len(world.accepted_bytes)])
        elif out and item.kind == "same":
            out.append(out[item.which % len(out)])
        elif out and item.kind == "same_id":
            try:
                first = json.loads(out[item.which % len(out)])
            except (ValueError, RecursionError):
                first = None
            if isinstance(first, dict) and isinstance(first.get("event_id"), str):
                other = TEMPLATES[(item.which + 1) % len(TEMPLATES)]
                out.append(_dumps(dict(other, event_id=first["event_id"]), True))
            else:
                out.append(Element(item.which % len(TEMPLATES)).render(f"fz-{next(FRESH_IDS)}"))
        else:
            out.append(Element(item.which % len(TEMPLATES)).render(f"fz-{next(FRESH_IDS)}"))
    return out


# -- the checks ----------------------------------------------------------------------------------

def post(world: World, body: bytes, capacity: int):
    """POST ``body`` to an ingest app over a fresh bus of ``capacity`` bytes per partition;
    returns (status, answer, event ids that reached the topic, the new dead letters)."""
    app = world.app
    bus = MemoryBus(max_lag_bytes=capacity, retention_bytes=0)
    bus.create_topics({topic: 3 for topic in ALL_TOPICS})
    probe = bus.consumer("probe", [FEATURES])
    world.gateway.producer, world.gateway.dlq_producer = bus.producer(), bus.producer()
    response = world.client.post("/v1/events", content=body)
    world.bodies += 1
    published = [app.codec.decode(FEATURES, m.value)["event_id"] for m in probe.poll_batch(100_000, 0.0)]
    _, rows = app.store.query("SELECT dead_letter_id, hex(payload), error FROM dead_letters "
                              "WHERE received_at >= now64(3) - INTERVAL 1 MINUTE")
    new = [(i, bytes.fromhex(p), e) for i, p, e in rows if i not in world.seen_dead_ids]
    world.seen_dead_ids.update(i for i, _, _ in new)
    assert len({i for i, _, _ in new}) == len(new), "two dead letters share an id"
    return response.status_code, response.json(), published, new


def check_batch(world: World, records: list[bytes], body: bytes, capacity: int) -> None:
    status, answer, published, dead = post(world, body, capacity)
    world.records += len(records)
    assert status in (200, 207, 400, 413, 422, 503), (status, answer)
    payloads = Counter(p for _, p, _ in dead)
    assert all(error for _, _, error in dead)
    if status in (400, 413):  # refused as a whole: nothing published, the body kept whole
        assert published == [] and answer["accepted"] == 0
        assert payloads == Counter([body])
        return
    accepted = answer["accepted_indexes"]
    retried = [r["index"] for r in answer["already_accepted"]]
    rejected = {r["index"]: r for r in answer["rejected"]}
    assert sorted(accepted + retried + list(rejected)) == list(range(len(records)))
    assert answer["accepted"] == len(accepted) == len(published)
    assert sorted(published) == sorted(json.loads(records[i])["event_id"] for i in accepted)
    assert payloads == Counter(records[i] for i in rejected), "a rejected record is not kept byte for byte"
    assert all(r["errors"] and r["status"] in (409, 413, 422, 503) for r in rejected.values())
    world.accepted_bytes.extend(records[i] for i in accepted)
    world.accepted_ids.update(published)
    for index in retried:  # a retry of something accepted, by an earlier request or earlier in this one
        assert json.loads(records[index])["event_id"] in world.accepted_ids
    if not rejected:
        assert status == 200


# -- the properties ------------------------------------------------------------------------------

@settings(FUZZ, max_examples=examples(250))
@given(plan=st.integers(0, 16).flatmap(lambda n: st.lists(st.one_of(elements, elements, elements, reuses),
                                                          min_size=n, max_size=n)), gaps=st.lists(whitespace, min_size=3,
       max_size=3), capacity=capacities)
def test_batches_answer_for_every_record(world, plan, gaps, capacity):
    records = materialise(world, plan)
    before, between, after = gaps
    body = before + b"[" + between + (b"," + between).join(records) + b"]" + after
    check_batch(world, records, body, capacity)


@settings(FUZZ, max_examples=examples(120))
@given(plan=st.one_of(elements, reuses), capacity=capacities)
def test_a_single_record_body_is_one_record(world, plan, capacity):
    (record,) = materialise(world, [plan])
    assume(not record.lstrip().startswith(b"["))  # an array body is a batch: the other property
    check_batch(world, [record], record, capacity)


@settings(FUZZ, max_examples=examples(200))
@given(body=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda parts: b"[" + b",".join(parts) + b"]", st.lists(st.binary(max_size=20), max_size=5)),
    st.builds(lambda k: b"[" * k, st.integers(1, 20_000)),
    st.builds(lambda v: _dumps(v, False)[:-1], json_values),  # truncated JSON
))
def test_any_bytes_are_answered_and_kept(world, body):
    """Bytes that are rarely JSON: refused as a whole (and kept whole), or split and answered per record."""
    status, answer, published, dead = post(world, body, 64 << 20)
    assert status in (200, 207, 400, 413, 422, 503), (status, answer)
    assert answer["accepted"] == len(published)
    kept = [p for _, p, _ in dead]
    if status == 400:
        assert kept == [body]
    else:
        assert len(kept) == len(answer["rejected"])
        assert all(k in body for k in kept)
