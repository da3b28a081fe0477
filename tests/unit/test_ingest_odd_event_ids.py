"""The duplicate policy finds events accepted earlier whatever their ids hold: quotes, backslashes,
braces, newlines, non-ASCII. The gateway hands ids to ClickHouse hex-encoded in the query text
(not as a bound parameter), so this proves the round trip on the real store (chDB)."""

from __future__ import annotations

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.contract import FeatureContract
from driftline.services.ingest.bounds import Bounds
from driftline.services.ingest.gateway import IngestGateway
from driftline.services.ingest.logic import Ingest
from driftline.topics import ALL_TOPICS, FEATURES

NOW = 1_800_000_000_000
KILN = FeatureContract(numeric=("temperature",), categorical=("zone",))
ODD_IDS = ["a'b", 'q"uote', "back\\slash", "new\nline", "nul\x00x", "é", "😀", "{x}", "{models:String}",
           "'; DROP TABLE ingest_accepted; --", "\\u0041", "%s", "x" * 1024]


def kiln_event(event_id: str, temperature: float = 900.0) -> dict:
    return {"model": "kiln's", "event_id": event_id, "entity_id": "k1", "event_time": NOW - 1,
            "numeric_features": {"temperature": temperature}, "categorical_features": {"zone": "z1"}}


def test_odd_event_ids_are_recognised_as_accepted_before(store):
    bus = MemoryBus()
    bus.create_topics({topic: 1 for topic in ALL_TOPICS})
    gateway = IngestGateway(Ingest({"kiln's": KILN}.get, Bounds(), clock=lambda: NOW), bus.producer(),
                            Codec(registry_client(None)), store)
    first = gateway.submit(FEATURES, [kiln_event(e) for e in ODD_IDS])
    assert first.accepted == list(range(len(ODD_IDS))), first.rejected
    retry = gateway.submit(FEATURES, [kiln_event(e) for e in ODD_IDS] + [kiln_event("fresh")])
    assert retry.already_accepted == list(enumerate(ODD_IDS)) and retry.accepted == [len(ODD_IDS)]
    changed = gateway.submit(FEATURES, [kiln_event(e, 901.0) for e in ODD_IDS])
    assert [r.status for r in changed.rejected] == [409] * len(ODD_IDS) and not changed.accepted
    assert store.query("SELECT count() FROM ingest_accepted FINAL")[1] == [(len(ODD_IDS) + 1,)]


def test_a_full_body_of_long_ids_stays_under_the_servers_query_size(store):
    """10,000 records (the default max_records) with 64-character ids: once hex-encoded, one
    query would hold 1.3 MB of text, over ClickHouse's max_query_size (256 KiB), and every try
    of the body answered 503. The ids go in queries of 64 KiB of JSON each."""
    bus = MemoryBus(max_lag_bytes=256 << 20)
    bus.create_topics({topic: 1 for topic in ALL_TOPICS})
    gateway = IngestGateway(Ingest({"kiln's": KILN}.get, Bounds(), clock=lambda: NOW), bus.producer(),
                            Codec(registry_client(None)), store)
    ids = [f"{i:064d}" for i in range(Bounds().max_records)]
    first = gateway.submit(FEATURES, [kiln_event(e) for e in ids])
    assert len(first.accepted) == len(ids), first.rejected[:3]
    retry = gateway.submit(FEATURES, [kiln_event(e) for e in ids])
    assert len(retry.already_accepted) == len(ids) and not retry.accepted  # found across every chunk


def test_ids_are_split_into_json_arrays_of_bounded_size():
    from driftline.services.ingest.gateway import _json_arrays
    import json

    ids = ["a" * 10, "é" * 30, "b", "x" * 200, "c"]
    arrays = _json_arrays(ids, 64)
    assert [e for a in arrays for e in json.loads(a)] == ids  # every id once, in order
    assert all(len(a) <= 64 + 2 for a in arrays if len(json.loads(a)) > 1)
    assert [json.loads(a) for a in arrays if len(a) > 66] == [["x" * 200]]  # too long alone: its own query
