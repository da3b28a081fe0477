"""Ingest's I/O: validated records to their topic, rejected ones to the dead-letter topic and table.

Used by the HTTP app and by the embedded demo, so both paths behave the same.
"""

from __future__ import annotations

import json
from typing import Any

from driftline.bus import Producer
from driftline.codec import Codec
from driftline.deadletter import dead_letter
from driftline.runner import Output, deliver
from driftline.store import Store
from driftline.topics import FEATURES, LABELS
from driftline.services.ingest.logic import Ingest, IngestResult

SERVICE = "ingest"
ROUTES = {FEATURES: "/v1/events", LABELS: "/v1/labels"}


class IngestGateway:
    def __init__(self, ingest: Ingest, producer: Producer, codec: Codec, store: Store):
        self.ingest = ingest
        self.producer = producer
        self.codec = codec
        self.store = store

    def submit_body(self, topic: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle an HTTP body (one JSON record or a list); returns (status, response)."""
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._write([], [dead_letter(SERVICE, ROUTES[topic], body, f"body is not JSON: {exc}")], topic)
            return 400, {"accepted": 0, "rejected": [{"index": None, "status": 400, "errors": [
                {"field": "(body)", "message": f"not JSON: {exc}"}]}]}
        records = parsed if isinstance(parsed, list) else [parsed]
        result = self.submit(topic, records)
        return _status(result, len(records)), _response(result)

    def submit(self, topic: str, records: list[Any]) -> IngestResult:
        result = self.ingest.events(records) if topic == FEATURES else self.ingest.labels(records)
        dead = [dead_letter(SERVICE, ROUTES[topic], r.payload, r.reason) for r in result.rejected]
        self._write(result.accepted, dead, topic)
        return result

    def _write(self, accepted: list[dict[str, Any]], dead: list[dict[str, Any]], topic: str) -> None:
        """Accepted records to their topic, dead letters to the dlq and its table: a runner's delivery."""
        output = Output()
        key_field = "entity_id" if topic == FEATURES else "event_id"
        for record in accepted:
            output.publish(topic, record[key_field], record)
        for record in dead:
            output.dead(record)
        deliver(output, self.store, self.producer, self.codec)


def _status(result: IngestResult, total: int) -> int:
    if not result.rejected:
        return 200
    return 422 if len(result.rejected) == total else 207


def _response(result: IngestResult) -> dict[str, Any]:
    return {
        "accepted": len(result.accepted),
        "rejected": [
            {"index": r.index, "event_id": r.event_id, "status": 422, "errors": r.errors} for r in result.rejected
        ],
    }
