"""ingest's HTTP API: ``POST /v1/events`` and ``POST /v1/labels``, one JSON record or a list.

Who may call it: anyone who reaches the port, unless the server has a token
(``DRIFTLINE_INGEST_TOKEN``); then a POST needs ``Authorization: Bearer
<token>`` and answers 401 without it (nothing of it is read or stored).
``GET /healthz`` is always open.

Status: 200 all accepted (a byte-identical retry of an accepted event counts as
accepted); 207 some accepted; 422 none accepted, each record refused for itself;
503 none accepted because the bus (or the store) refused — retry after the
``Retry-After`` seconds; 400 the body is not JSON; 413 the body is too large
(not read past the limit, and not stored) or holds too many records.

The answer names every record: ``accepted_indexes``, ``already_accepted`` and
``rejected`` (index, event_id, per-record status, errors). Every rejected
record, and every body that is not JSON, is in the ``dead_letters`` table with
the exact bytes received for it (and copied to the ``dlq`` topic when it has room).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from driftline.bearer import bearer_matches
from driftline.topics import FEATURES, LABELS
from driftline.services.ingest.gateway import RETRY_AFTER_S, IngestGateway


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (:class:`BodyTooLarge`) as soon as it is known to exceed ``limit``:
    from ``Content-Length`` before reading anything, or while streaming a chunked body."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(gateway: IngestGateway, token: str | None = None) -> FastAPI:
    """The ingest API over ``gateway``; with ``token``, POSTs need ``Authorization: Bearer <token>``."""
    app = FastAPI(title="driftline ingest", version="1")

    async def submit(topic: str, request: Request) -> JSONResponse:
        if token is not None and not bearer_matches(request.headers.get("authorization"), token):
            return JSONResponse({"detail": "missing or wrong bearer token (DRIFTLINE_INGEST_TOKEN)"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
        limit = gateway.bounds.max_body_bytes
        try:
            body = await read_body(request, limit)
        except BodyTooLarge:
            message = f"body larger than {limit} bytes; split it into smaller batches (it was not stored)"
            return JSONResponse({"accepted": 0, "accepted_indexes": [], "already_accepted": [], "rejected": [
                {"index": None, "event_id": None, "status": 413, "errors": [{"field": "(body)", "message": message}]}]},
                status_code=413, headers={"Connection": "close"})
        status, content = await run_in_threadpool(gateway.submit_body, topic, body)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return JSONResponse(content, status_code=status, headers=headers)

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        return await submit(FEATURES, request)

    @app.post("/v1/labels")
    async def labels(request: Request) -> JSONResponse:
        return await submit(LABELS, request)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
