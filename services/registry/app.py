"""The registry service: the registry's HTTP API.

Reads are open; writes (register, move an alias, roll back, record a
decision) need ``Authorization: Bearer <DRIFTLINE_REGISTRY_TOKEN>`` and answer
401 without it, or when the server has no token configured. Every change is an
audit row and a ModelEvent (the registry's listeners publish it).
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from driftline.contract import FeatureContract
from driftline.registry import Registry, RegistryError, UntrustedArtifact
from driftline.registry.card import model_card


class NewVersion(BaseModel):
    artifact_b64: str = Field(description="The skops artifact, base64.")
    contract: dict[str, Any]
    actor: str
    reason: str = ""
    recipe: dict[str, Any] = {}
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    profile: dict[str, Any] = {}


class AliasMove(BaseModel):
    version: int
    actor: str
    reason: str


class Rollback(BaseModel):
    actor: str
    reason: str
    alias: str = "champion"


class Decision(BaseModel):
    action: str = Field(pattern="^[a-z_]+$", description="e.g. rejected")
    actor: str
    reason: str


def create_app(registry: Registry, token: str | None) -> FastAPI:
    app = FastAPI(title="driftline registry", version="1")

    def require_token(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if token is None:
            raise HTTPException(401, "writes are disabled: the server has no DRIFTLINE_REGISTRY_TOKEN")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/v1/models")
    def models() -> list[dict[str, Any]]:
        return [{"model": m, "aliases": registry.aliases(m), "versions": len(registry.versions(m))} for m in registry.models()]

    @app.get("/v1/models/{model}/versions")
    def versions(model: str) -> list[dict[str, Any]]:
        return [v.to_dict() for v in registry.versions(model)]

    @app.get("/v1/models/{model}/versions/{version}")
    def version(model: str, version: int) -> dict[str, Any]:
        return _call(registry.get, model, version).to_dict()

    @app.get("/v1/models/{model}/aliases/{alias}")
    def alias(model: str, alias: str) -> dict[str, Any]:
        meta = registry.resolve(model, alias)
        if meta is None:
            raise HTTPException(404, f"model {model!r} has no {alias!r} alias")
        return meta.to_dict()

    @app.get("/v1/models/{model}/versions/{version}/artifact")
    def artifact(model: str, version: int) -> Response:
        meta = _call(registry.get, model, version)
        return Response(registry.artifacts.get(meta.sha256), media_type="application/octet-stream",
                        headers={"X-Driftline-Sha256": meta.sha256})

    @app.get("/v1/models/{model}/versions/{version}/card", response_class=PlainTextResponse)
    def card(model: str, version: int) -> str:
        meta = _call(registry.get, model, version)
        return model_card(meta, registry.aliases(model), registry.audit_log(model))

    @app.get("/v1/audit")
    def audit(model: str | None = None) -> list[dict[str, Any]]:
        return registry.audit_log(model)

    @app.post("/v1/models/{model}/versions", status_code=201, dependencies=[Depends(require_token)])
    def register(model: str, body: NewVersion) -> dict[str, Any]:
        try:
            meta = registry.register_artifact(
                model, base64.b64decode(body.artifact_b64), FeatureContract.from_dict(body.contract),
                actor=body.actor, reason=body.reason, recipe=body.recipe, params=body.params,
                metrics=body.metrics, lineage=body.lineage, profile=body.profile)
        except UntrustedArtifact as exc:
            raise HTTPException(422, str(exc)) from exc
        return meta.to_dict()

    @app.put("/v1/models/{model}/aliases/{alias}", dependencies=[Depends(require_token)])
    def move_alias(model: str, alias: str, body: AliasMove) -> dict[str, Any]:
        return _call(registry.set_alias, model, alias, body.version, actor=body.actor, reason=body.reason)

    @app.post("/v1/models/{model}/rollback", dependencies=[Depends(require_token)])
    def rollback(model: str, body: Rollback) -> dict[str, Any]:
        return _call(registry.rollback, model, actor=body.actor, reason=body.reason, alias=body.alias)

    @app.post("/v1/models/{model}/versions/{version}/decisions", dependencies=[Depends(require_token)])
    def decision(model: str, version: int, body: Decision) -> dict[str, Any]:
        return _call(registry.record, model, version, body.action, actor=body.actor, reason=body.reason)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
