"""A small Python client for ingest: post feature events and labels in batches.

::

    from driftline.client import Client

    result = Client("http://127.0.0.1:8000").send_events(records, model="churn")
    print(result.accepted, result.already_accepted, result.rejected)

Records are dicts in ingest's JSON format (see the README, "Sending data").
What the client does for you:

* batches (``batch_size`` records per ``POST``);
* retries what the bus refused (503, per record or for the whole request) after
  the ``Retry-After`` seconds, for up to ``retry_for_s``: a retry of an event
  already accepted is answered ``already_accepted`` by ingest, so retrying is
  always harmless;
* splits a batch ingest answers 413 (too large) in halves until it fits;
* retries a request that failed on the network (the same harmless retry).

Every record ends up counted once: accepted, already accepted, or rejected
(with ingest's per-record status and errors; ingest keeps each rejected record
in ``dead_letters`` with the bytes sent).

A library module: it knows HTTP and ingest's answer format, nothing else of driftline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any

import httpx

EVENTS_PATH = "/v1/events"
LABELS_PATH = "/v1/labels"


class IngestError(RuntimeError):
    """Ingest could not be used at all (unreachable, refused the token, answered nonsense)."""


class Unauthorized(IngestError):
    """Ingest answered 401: the bearer token is missing or wrong."""


@dataclass(frozen=True)
class Rejection:
    """A record ingest did not accept.

    Attributes
    ----------
    index
        Its position among the records handed to ``send_events`` / ``send_labels``.
    event_id
        As ingest read it (None if it could not).
    status
        422 invalid, 409 an ``event_id`` already accepted with other content, 413 too
        large, 503 the bus stayed full for longer than the client retried.
    errors
        ``[{"field": ..., "message": ...}]``, as ingest answered.
    """

    index: int
    event_id: str | None
    status: int
    errors: list[dict[str, str]]

    @property
    def reason(self) -> str:
        return "; ".join(f"{e.get('field')}: {e.get('message')}" for e in self.errors)


@dataclass
class SendResult:
    """What happened to the records of one ``send_events`` / ``send_labels`` call.

    Attributes
    ----------
    sent
        Records handed to the client.
    accepted
        Records published by ingest.
    already_accepted
        Retries of events ingest had accepted before (not published again: harmless).
    rejections
        Every other record, with why.
    retries
        Requests sent again (bus full, network failure).
    server_started_at
        Ingest's clock (the ``Date`` header) at the first answer, to find the rejects in
        ``dead_letters`` by their ``received_at``.
    """

    sent: int = 0
    accepted: int = 0
    already_accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    retries: int = 0
    server_started_at: datetime | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    @property
    def ok(self) -> bool:
        return not self.rejections


def _jsonable(value: Any) -> Any:
    """For json.dumps: numpy scalars and datetimes, which records built from data frames carry."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars, without importing numpy
        return value.item()
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def encode_record(record: Any) -> bytes:
    """One record as JSON bytes. NaN and infinities are written as such: ingest rejects that
    record alone (it reads them, then refuses non-finite numbers), never the whole batch."""
    return json.dumps(record, default=_jsonable, separators=(",", ":")).encode()


@dataclass
class _Part:
    """Records of one request: their positions among all records and their JSON bytes."""

    indexes: list[int]
    bodies: list[bytes]

    def body(self) -> bytes:
        return b"[" + b",".join(self.bodies) + b"]"

    def subset(self, local: list[int]) -> _Part:
        return _Part([self.indexes[i] for i in local], [self.bodies[i] for i in local])

    def halves(self) -> tuple[_Part, _Part]:
        middle = len(self.indexes) // 2
        return (_Part(self.indexes[:middle], self.bodies[:middle]),
                _Part(self.indexes[middle:], self.bodies[middle:]))


class Client:
    """ingest at ``url``.

    Parameters
    ----------
    url
        ingest's base URL, e.g. ``http://127.0.0.1:8000`` (``driftline up``) or the ingest service.
    token
        Sent as ``Authorization: Bearer <token>`` (ingest's ``DRIFTLINE_INGEST_TOKEN``).
    timeout_s
        Per request.
    retry_for_s
        How long one batch may keep being retried (bus full, network) before what is
        left of it counts as rejected (503) or, for the network, raises :class:`IngestError`.
    sleep
        How to wait between retries (tests pass a fake).
    transport
        An httpx transport (tests pass ``httpx.MockTransport``); None: the network.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 60.0, retry_for_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)
        self.retry_for_s = retry_for_s
        self._sleep = sleep
        self._answered_once = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send_events(self, records: Iterable[dict[str, Any]], *, model: str | None = None, batch_size: int = 1000,
                    progress: Callable[[SendResult], None] | None = None) -> SendResult:
        """Post feature events; ``model`` fills in the ``model`` of records that have none.

        ``records`` may be any iterable (a generator reading a file is read batch by batch);
        ``progress`` is called with the running result after every batch.
        """
        return self._send(EVENTS_PATH, records, model, batch_size, progress)

    def send_labels(self, records: Iterable[dict[str, Any]], *, model: str | None = None, batch_size: int = 1000,
                    progress: Callable[[SendResult], None] | None = None) -> SendResult:
        """Post labels (``model``, ``event_id``, ``label``, optional ``value``, ``label_time``)."""
        return self._send(LABELS_PATH, records, model, batch_size, progress)

    def _send(self, path: str, records: Iterable[dict[str, Any]], model: str | None, batch_size: int,
              progress: Callable[[SendResult], None] | None) -> SendResult:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        result = SendResult()
        for part in self._parts(records, model, batch_size):
            result.sent += len(part.indexes)
            self._deliver(path, part, result)
            if progress is not None:
                progress(result)
        return result

    @staticmethod
    def _parts(records: Iterable[dict[str, Any]], model: str | None, batch_size: int) -> Iterator[_Part]:
        iterator = iter(records)
        position = 0
        while batch := list(islice(iterator, batch_size)):
            if model is not None:
                batch = [{"model": model, **r} if isinstance(r, dict) and "model" not in r else r for r in batch]
            yield _Part(list(range(position, position + len(batch))), [encode_record(r) for r in batch])
            position += len(batch)

    def _deliver(self, path: str, part: _Part, result: SendResult) -> None:
        """Post ``part`` until every record of it is accepted or rejected for itself."""
        deadline = time.monotonic() + self.retry_for_s
        pending = [part]
        while pending:
            current = pending.pop()
            response = self._post(path, current.body(), deadline, result)
            if response.status_code == 401:
                raise Unauthorized(f"ingest at {self.url} refused the request (401): "
                                   "a bearer token is missing or wrong (DRIFTLINE_INGEST_TOKEN, --token)")
            if response.status_code == 413 and len(current.indexes) > 1:
                pending.extend(reversed(current.halves()))  # the first half goes first
                continue
            answer = _answer(response, self.url)
            retry = self._account(current, answer, response.status_code, result)
            if not retry.indexes:
                continue
            wait = _retry_after(response)
            if time.monotonic() + wait > deadline:  # ingest kept them in dead_letters already
                result.rejections.extend(Rejection(i, None, 503, [{"field": "(bus)", "message": (
                    f"the bus was still full after {self.retry_for_s:g} s of retries")}]) for i in retry.indexes)
                continue
            result.retries += 1
            self._sleep(wait)
            pending.append(retry)

    def _account(self, part: _Part, answer: dict[str, Any], status: int, result: SendResult) -> _Part:
        """Counts ``answer`` into ``result``; returns the records to send again (refused by a full bus)."""
        rejected = answer.get("rejected") or []
        whole = [r for r in rejected if r.get("index") is None]
        if whole:  # the request as a whole: 503 store/bus unavailable, 413 a lone record too large
            if whole[0].get("status") == 503:
                return part
            result.rejections.extend(Rejection(i, None, int(whole[0].get("status", status)), whole[0]["errors"])
                                     for i in part.indexes)
            return _Part([], [])
        result.accepted += len(answer.get("accepted_indexes", []))
        result.already_accepted += len(answer.get("already_accepted", []))
        retry = []
        for r in rejected:
            local = r["index"]
            if r.get("status") == 503:
                retry.append(local)
            else:
                result.rejections.append(Rejection(part.indexes[local], r.get("event_id"), int(r["status"]),
                                                   r.get("errors", [])))
        return part.subset(retry)

    def _post(self, path: str, body: bytes, deadline: float, result: SendResult) -> httpx.Response:
        """One POST; a network failure is retried with backoff (a retry is harmless) until ``deadline``.

        Until ingest has answered once, two attempts only: a wrong URL fails in a second.
        """
        backoff = 0.5
        attempts = 0
        while True:
            attempts += 1
            try:
                response = self._http.post(path, content=body)
            except httpx.TransportError as exc:
                if (not self._answered_once and attempts >= 2) or time.monotonic() + backoff > deadline:
                    raise IngestError(f"cannot reach ingest at {self.url}{path}: {exc!r}") from exc
                result.retries += 1
                self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._answered_once = True
            if result.server_started_at is None:
                result.server_started_at = _server_time(response)
            return response


def _answer(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ("accepted_indexes" in answer or "rejected" in answer):
        raise IngestError(f"{url} answered {response.status_code} {response.text[:300]!r}, not an ingest answer "
                          "(is this ingest's URL?)")
    return answer


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), 30.0)
    except ValueError:
        return 1.0


def _server_time(response: httpx.Response) -> datetime | None:
    try:
        return parsedate_to_datetime(response.headers["date"])
    except (KeyError, TypeError, ValueError):
        return None
