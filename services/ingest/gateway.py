"""Ingest's I/O: valid records to their topic, every other record to ``dead_letters`` with its bytes.

Used by the HTTP app and by the embedded demo, so both paths behave the same.

One request, in this order (under a lock, so two requests in one process cannot
both win the same event_id):

1. validate every record on its own (:class:`~driftline.services.ingest.logic.Ingest`)
   and Avro-encode every valid one up front: an encoding failure or an oversize
   record is a rejection of that record, never an error halfway through publishing;
2. feature events only: look up the (model, event_id)s already accepted, one
   query per batch, and apply the duplicate policy
   (:mod:`~driftline.services.ingest.duplicates`);
3. write the dead letters known so far to ``dead_letters`` (if the store is down,
   nothing has been published yet and the whole request answers 503);
4. publish the records, one by one; after the first :class:`~driftline.bus.BusFull`
   the rest of the batch is not tried (it would only wait on a full bus) and every
   record not published is answered 503 and dead-lettered; then wait for the bus to
   acknowledge them, within the request's deadline (``Bounds.deadline_s``). Records
   whose delivery failed outright are produced again while time is left. Records
   still unacknowledged at the deadline are answered 503 **in flight**: not refused,
   not dead-lettered, since the producer keeps delivering them after the answer. A
   client retry is harmless: predictions are keyed by ``prediction_id`` (the
   predictor scores a repeated event into the same id, which the ``predictions``
   table and the drift-detector count once) and the label join is idempotent on
   (model, event_id);
5. write those dead letters and, for events, the accepted (model, event_id, digest)s;
6. copy the dead letters to the ``dlq`` topic, best effort: the table is the record
   that counts, and a full ``dlq`` topic must not lose them or fail the request.

Nothing is reported accepted that did not reach its topic, and every record not
accepted is in ``dead_letters`` with the exact bytes received for it (except a
byte-identical retry of an accepted event, answered "already accepted").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from driftline import telemetry
from driftline.bus import BusFull, Producer
from driftline.codec import Codec
from driftline.deadletter import dead_letter, dead_letter_row
from driftline.failure import is_transient
from driftline.store import Store
from driftline.timeutil import now_ms
from driftline.topics import DLQ, FEATURES, LABELS, RECORD_OF_TOPIC
from driftline.services.ingest.body import BodyRejected, RawRecord, split_body
from driftline.services.ingest.duplicates import Claim, Verdict, canonical_digest, decide
from driftline.services.ingest.logic import Candidate, Ingest, Rejection

log = logging.getLogger(__name__)

SERVICE = "ingest"
ROUTES = {FEATURES: "/v1/events", LABELS: "/v1/labels"}
ACCEPTED_TABLE = "ingest_accepted"
#: Seconds a client is asked to wait before retrying what the bus or the store refused.
RETRY_AFTER_S = 1
#: The event ids travel as JSON arrays, hex-encoded into the query text: binding 1,000 ids
#: as an Array(String) parameter cost clickhouse-connect 4.2 ms in Python (it escapes each
#: character in a generator), the hex 0.09 ms. Hex digits need no escaping and cannot end the
#: literal, so no event id can change the query. A query's text is capped by the server's
#: max_query_size (256 KiB by default: 10,000 ids of 14 characters went over it), so ids
#: go in queries of at most this many bytes of JSON each.
_ACCEPTED_BEFORE_JSON_BYTES = 64 << 10
_ACCEPTED_BEFORE = (
    f"SELECT model, event_id, digest FROM {ACCEPTED_TABLE} "
    "WHERE model IN {{models:Array(String)}} "
    "AND event_id IN (SELECT arrayJoin(JSONExtract(unhex('{event_ids_hex}'), 'Array(String)'))) ORDER BY accepted_at"
)


def _json_arrays(strings: list[str], max_bytes: int) -> list[bytes]:
    """``strings`` as UTF-8 JSON arrays of at most about ``max_bytes`` each (one string longer
    than that is an array of its own), in order."""
    arrays, chunk, size = [], [], 0
    for string in strings:
        encoded = json.dumps(string, ensure_ascii=False)
        length = len(encoded.encode("utf-8")) + 1
        if chunk and size + length > max_bytes:
            arrays.append(chunk)
            chunk, size = [], 0
        chunk.append(encoded)
        size += length
    if chunk:
        arrays.append(chunk)
    return [f"[{','.join(chunk)}]".encode("utf-8") for chunk in arrays]


class StoreUnavailable(RuntimeError):
    """The store could not be read or written before anything was published: retry the request."""


class RegistryUnavailable(RuntimeError):
    """The registry could not say what a model's contract is, before anything was published: retry."""


@dataclass
class IngestResult:
    """What happened to every record of one request.

    Attributes
    ----------
    total
        Records in the request.
    accepted
        Indexes of the records published to their topic by this request.
    already_accepted
        Indexes of byte-identical retries of events accepted before (not published again).
    rejected
        Every other record, with its status and errors; each one is in ``dead_letters``.
    in_flight
        Indexes (and event ids) of records handed to the bus and not acknowledged by the
        deadline: they may still arrive. Not dead-lettered; a retry is harmless.
    body_error
        Set when the body as a whole was refused (no records).
    """

    total: int = 0
    accepted: list[int] = field(default_factory=list)
    already_accepted: list[tuple[int, str]] = field(default_factory=list)  # (index, event_id)
    rejected: list[Rejection] = field(default_factory=list)
    in_flight: list[tuple[int, str]] = field(default_factory=list)  # (index, event_id)
    body_error: BodyRejected | None = None


@dataclass
class _Encoded:
    candidate: Candidate
    key: bytes
    value: bytes


@dataclass
class _Plan:
    """What the duplicate policy leaves to publish, and what it decided for the rest."""

    to_publish: list[_Encoded]
    repeats: dict[int, int] = field(default_factory=dict)  # index -> index of its identical first occurrence
    repeated: dict[int, Candidate] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)  # index -> canonical digest (events only)
    keys: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (model, event_id)


class IngestGateway:
    """
    Parameters
    ----------
    ingest
        The validation logic (its ``bounds`` also bound bodies and encoded records).
    producer
        Publishes accepted records.
    codec
        Avro encoder.
    store
        ``dead_letters`` and the accepted-events index.
    dlq_producer
        Publishes the copies of dead letters to ``dlq``; its own producer so a delivery
        failure there is never reported against the accepted records (default: ``producer``).
    """

    def __init__(self, ingest: Ingest, producer: Producer, codec: Codec, store: Store,
                 dlq_producer: Producer | None = None):
        self.ingest = ingest
        self.producer = producer
        self.dlq_producer = dlq_producer or producer
        self.codec = codec
        self.store = store
        self._lock = threading.Lock()

    @property
    def bounds(self):
        return self.ingest.bounds

    def submit_body(self, topic: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle an HTTP body (one JSON record or a list); returns (status, response)."""
        try:
            result = self._submit_body(topic, body)
        except StoreUnavailable as exc:
            return 503, _refusal(503, f"the store is unavailable, nothing was accepted; retry: {exc}")
        except RegistryUnavailable as exc:
            return 503, _refusal(503, f"the registry is unavailable, nothing was accepted; retry: {exc}")
        return status_of(result), response_of(result)

    def _submit_body(self, topic: str, body: bytes) -> IngestResult:
        records = split_body(body, self.bounds.max_depth, self.bounds.max_records)
        if isinstance(records, BodyRejected):
            dead = [dead_letter(SERVICE, ROUTES[topic], body, records.message)]
            with self._lock:
                self._store_dead(dead)
                self._copy_to_dlq(dead)
            telemetry.observe_ingest(topic, 0, 0, [400])
            return IngestResult(body_error=records)
        return self._submit(topic, records)

    def submit(self, topic: str, records: list[Any]) -> IngestResult:
        """Records handed over in process (the embedded demo): the same checks as over HTTP."""
        return self._submit(topic, [RawRecord(index, value) for index, value in enumerate(records)])

    def _submit(self, topic: str, records: list[RawRecord]) -> IngestResult:
        with self._lock:
            deadline = time.monotonic() + self.bounds.deadline_s
            try:
                validation = self.ingest.events(records) if topic == FEATURES else self.ingest.labels(records)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                raise RegistryUnavailable(str(exc)) from exc
            result = IngestResult(total=len(records), rejected=list(validation.rejected))
            encoded = self._encode(topic, validation.candidates, result)
            plan = self._apply_duplicate_policy(encoded, result) if topic == FEATURES else _Plan(encoded)
            dead_before = self._dead_letters(topic, result.rejected)
            self._store_dead(dead_before)  # raises StoreUnavailable while nothing is published yet
            known = len(result.rejected)
            published = self._publish(topic, plan.to_publish, result, deadline)
            in_flight = {index for index, _ in result.in_flight}
            for index, first in plan.repeats.items():
                candidate = plan.repeated[index]
                if first in published:
                    result.already_accepted.append((index, candidate.record["event_id"]))
                elif first in in_flight:
                    result.in_flight.append((index, candidate.record["event_id"]))
                else:
                    result.rejected.append(_refused(candidate, f"record {first} of this batch, identical to it, "
                                                               "was not accepted"))
            dead_after = self._dead_letters(topic, result.rejected[known:])
            self._keep_after_publish(dead_after, [(plan.keys[i], plan.digests[i]) for i in sorted(published)
                                                  if i in plan.digests])
            self._copy_to_dlq(dead_before + dead_after, deadline)
        result.accepted.sort()
        result.in_flight.sort()
        result.rejected.sort(key=lambda r: r.index)
        result.already_accepted.sort()
        telemetry.observe_ingest(topic, len(result.accepted), len(result.already_accepted),
                                 [r.status for r in result.rejected] + [503] * len(result.in_flight))
        return result

    def _encode(self, topic: str, candidates: list[Candidate], result: IngestResult) -> list[_Encoded]:
        """Avro bytes for every candidate, before anything is published; failures are rejections."""
        key_field = "entity_id" if topic == FEATURES else "event_id"
        limit = self.bounds.max_record_bytes
        encoded = []
        for candidate in candidates:
            try:
                value = self.codec.encode(topic, candidate.record)
            except Exception as exc:  # any encoder failure is this record's, never the batch's
                result.rejected.append(_rejection(candidate, 422, "(record)",
                                                  f"cannot be encoded as {RECORD_OF_TOPIC[topic]}: {exc}"))
                continue
            if len(value) > limit:
                result.rejected.append(_rejection(candidate, 413, "(record)",
                                                  f"{len(value)} bytes once encoded; at most {limit}"))
                continue
            encoded.append(_Encoded(candidate, candidate.record[key_field].encode(), value))
        return encoded

    def _apply_duplicate_policy(self, encoded: list[_Encoded], result: IngestResult) -> _Plan:
        """The events to publish; the others become already-accepted, repeats or duplicate rejections."""
        claims = [Claim(e.candidate.index, (e.candidate.record["model"], e.candidate.record["event_id"]),
                        canonical_digest(e.value)) for e in encoded]
        plan = _Plan([], digests={c.index: c.digest for c in claims}, keys={c.index: c.key for c in claims})
        for item, decision in zip(encoded, decide(claims, self._accepted_before([c.key for c in claims]))):
            if decision.verdict is Verdict.NEW:
                plan.to_publish.append(item)
            elif decision.verdict is Verdict.ALREADY_ACCEPTED:
                result.already_accepted.append((item.candidate.index, item.candidate.record["event_id"]))
            elif decision.verdict is Verdict.REPEAT:
                plan.repeats[item.candidate.index] = decision.first_index
                plan.repeated[item.candidate.index] = item.candidate
            else:
                result.rejected.append(_rejection(item.candidate, 409, "event_id", decision.reason))
        return plan

    def _accepted_before(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(model, event_id) -> digest of the event accepted earlier, for ``keys``: one query."""
        if not keys:
            return {}
        wanted = set(keys)
        models = sorted({m for m, _ in wanted})
        found: dict[tuple[str, str], str] = {}
        for event_ids in _json_arrays(sorted({e for _, e in wanted}), _ACCEPTED_BEFORE_JSON_BYTES):
            try:
                _, rows = self.store.query(_ACCEPTED_BEFORE.format(event_ids_hex=event_ids.hex()), {"models": models})
            except Exception as exc:
                raise StoreUnavailable(f"cannot read {ACCEPTED_TABLE}: {exc}") from exc
            for model, event_id, digest in rows:
                if (model, event_id) in wanted:
                    found.setdefault((model, event_id), digest)  # rows come oldest first: the first wins
        return found

    def _publish(self, topic: str, encoded: list[_Encoded], result: IngestResult, deadline: float) -> set[int]:
        """Produce ``encoded`` in order; the indexes the bus acknowledged by ``deadline``. Refusals
        become rejections; records still unacknowledged at the deadline go to ``result.in_flight``."""
        produced: list[_Encoded] = []
        produce_many = getattr(self.producer, "produce_many", None)
        if produce_many is not None:  # the embedded bus: the whole batch under one lock
            try:
                produce_many([(topic, item.value, item.key) for item in encoded])
                produced = encoded
            except BusFull as exc:
                produced = encoded[:exc.appended]
                self._refuse_the_rest(topic, encoded[exc.appended:], exc, result)
        else:
            for position, item in enumerate(encoded):
                try:
                    self.producer.produce(topic, item.value, key=item.key)
                except BusFull as exc:
                    self._refuse_the_rest(topic, encoded[position:], exc, result)
                    break
                except Exception as exc:  # e.g. a broker refusing this one record
                    result.rejected.append(_refused(item.candidate, f"the bus refused the record: {exc}"))
                    continue
                produced.append(item)
        if not self._acknowledged(topic, produced, deadline):
            result.in_flight.extend((e.candidate.index, e.candidate.record["event_id"]) for e in produced)
            return set()
        indexes = {e.candidate.index for e in produced}
        result.accepted.extend(indexes)
        return indexes

    @staticmethod
    def _refuse_the_rest(topic: str, rest: list[_Encoded], exc: BusFull, result: IngestResult) -> None:
        # The rest would only wait on the same full bus (Kafka's producer blocks up to 30 s).
        log.warning("ingest: bus full on %s; %d records refused", topic, len(rest))
        result.rejected.extend(_refused(e.candidate, f"the bus is full: {exc}") for e in rest)

    def _acknowledged(self, topic: str, produced: list[_Encoded], deadline: float) -> bool:
        """Wait until the bus acknowledges ``produced``, at most until ``deadline``.

        A flush that fails with records still queued means the bus is away or slow: they stay
        with the producer, which goes on delivering them. A flush that fails with nothing left
        queued means deliveries failed outright: the records are produced again while time is
        left (one that did arrive becomes a duplicate the consumers count once).
        """
        while True:
            try:
                self.producer.flush(max(0.0, deadline - time.monotonic()))
                return True
            except Exception as exc:
                failure = exc
            try:
                self.producer.flush(0.0)
            except Exception:  # still queued: in flight
                break
            if time.monotonic() >= deadline:
                break
            log.warning("ingest: %s refused %d records (%s); producing them again", topic, len(produced), failure)
            try:
                for item in produced:
                    self.producer.produce(topic, item.value, key=item.key)
            except Exception as exc:  # a full or failing bus: what was produced may still arrive
                failure = exc
                break
        log.error("ingest: %d records on %s not acknowledged within %.1fs (%s); answered as in flight",
                  len(produced), topic, self.bounds.deadline_s, failure)
        return False

    def _keep_after_publish(self, dead: list[dict[str, Any]], accepted: list[tuple[tuple[str, str], str]]) -> None:
        """Dead letters of what the bus refused, and the (model, event_id, digest) of what it took.

        The records are on the topic (or refused) already, so a store failure here is
        logged, not raised: the answer must still say what happened to each record.
        """
        try:
            self._store_dead(dead)
        except StoreUnavailable as exc:
            log.error("ingest: %d records refused by the bus and not kept in dead_letters: %s", len(dead), exc)
        if not accepted:
            return
        at = now_ms()  # epoch ms: the store writes ints to DateTime64 columns without a datetime per row
        try:
            self.store.insert(ACCEPTED_TABLE, [{"model": model, "event_id": event_id, "digest": digest,
                                                "accepted_at": at} for (model, event_id), digest in accepted])
        except Exception as exc:  # a retry of these events would then be published again: a harmless duplicate
            log.error("ingest: cannot record %d accepted events in %s: %s", len(accepted), ACCEPTED_TABLE, exc)

    def _dead_letters(self, topic: str, rejections: list[Rejection]) -> list[dict[str, Any]]:
        return [dead_letter(SERVICE, ROUTES[topic], r.payload, r.reason) for r in rejections]

    def _store_dead(self, dead: list[dict[str, Any]]) -> None:
        if not dead:
            return
        try:
            self.store.insert("dead_letters", [dead_letter_row(d) for d in dead])
        except Exception as exc:
            raise StoreUnavailable(f"cannot write dead_letters: {exc}") from exc

    def _copy_to_dlq(self, dead: list[dict[str, Any]], deadline: float | None = None) -> None:
        if not dead:
            return
        try:
            for record in dead:
                self.dlq_producer.produce(DLQ, self.codec.encode(DLQ, record), key=record["dead_letter_id"].encode())
            # Within what is left of the request's deadline: a dlq copy never holds the answer up.
            self.dlq_producer.flush(self.bounds.deadline_s if deadline is None
                                    else max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # BusFull or a broker error: dead_letters holds them all
            log.warning("ingest: %d dead letters kept in dead_letters but not copied to %s: %s", len(dead), DLQ, exc)


def _rejection(candidate: Candidate, status: int, field_name: str, message: str) -> Rejection:
    return Rejection(candidate.index, candidate.record["event_id"], [{"field": field_name, "message": message}],
                     candidate.payload, status)


def _refused(candidate: Candidate, message: str) -> Rejection:
    """Not published because of the bus, not the record: 503, and worth retrying."""
    return _rejection(candidate, 503, "(bus)", message)


def _refusal(status: int, message: str) -> dict[str, Any]:
    """The answer when the request as a whole is refused."""
    return {"accepted": 0, "accepted_indexes": [], "already_accepted": [], "in_flight": [],
            "rejected": [{"index": None, "event_id": None, "status": status,
                          "errors": [{"field": "(body)", "message": message}]}]}


def status_of(result: IngestResult) -> int:
    """200 all accepted (or already accepted), 207 some, 503 none because the bus refused,
    422 none because every record was refused for itself; a refused body keeps its own status.
    503 too whenever records are in flight: the client should send them again (harmlessly)."""
    if result.body_error is not None:
        return result.body_error.status
    if result.in_flight:
        return 503
    if not result.rejected:
        return 200
    if result.accepted or result.already_accepted:
        return 207
    if any(r.status == 503 for r in result.rejected):
        return 503
    return 422


def response_of(result: IngestResult) -> dict[str, Any]:
    """The JSON answer: compatible with the first version (``accepted``, ``rejected``) and extended."""
    if result.body_error is not None:
        return _refusal(result.body_error.status, result.body_error.message)
    return {
        "accepted": len(result.accepted),
        "accepted_indexes": result.accepted,
        "already_accepted": [{"index": i, "event_id": e} for i, e in result.already_accepted],
        "in_flight": [{"index": i, "event_id": _printable(e)} for i, e in result.in_flight],
        **({"in_flight_detail": "these records were handed to the bus and not acknowledged in time; they may "
                                "still arrive. Send them again after Retry-After seconds: a retry is counted once."}
           if result.in_flight else {}),
        "rejected": [
            {"index": r.index, "event_id": _printable(r.event_id), "status": r.status,
             "errors": [{"field": _printable(e["field"]), "message": _printable(e["message"])} for e in r.errors]}
            for r in result.rejected
        ],
    }


def _printable(text: str | None) -> str | None:
    """JSON-safe: a lone surrogate would make the response itself fail to encode."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")
