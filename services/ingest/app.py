"""ingest's HTTP API: ``POST /v1/events`` and ``POST /v1/labels``, one JSON record or a list.

Status: 200 all accepted; 207 some accepted (the body names the rejected ones);
422 none accepted; 400 the body is not JSON. Every rejected record is also in
the ``dlq`` topic and the ``dead_letters`` table with its original bytes.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from driftline.topics import FEATURES, LABELS
from driftline.services.ingest.gateway import IngestGateway


def create_app(gateway: IngestGateway) -> FastAPI:
    app = FastAPI(title="driftline ingest", version="1")

    async def submit(topic: str, request: Request) -> JSONResponse:
        body = await request.body()
        status, content = await run_in_threadpool(gateway.submit_body, topic, body)
        return JSONResponse(content, status_code=status)

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
