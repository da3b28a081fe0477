"""The registry service: the registry's HTTP API.

Who may call what:

- Metadata reads (models, versions, aliases, cards, audit) are open.
- Artifact downloads are open unless the server has a read token
  (``DRIFTLINE_REGISTRY_READ_TOKEN``); then they need
  ``Authorization: Bearer <read token or write token>`` and answer 401 without it.
- Writes (register, move an alias, roll back, record a decision) need
  ``Authorization: Bearer <DRIFTLINE_REGISTRY_TOKEN>`` and answer 401 without
  it, or when the server has no token configured.

Input is checked before anything is written: a model name outside
``MODEL_NAME_PATTERN``, a version outside 1..2**63-1, an alias not in
``ALIASES``, bad base64, a contract ``FeatureContract`` rejects, or an artifact
that is not skops, names an untrusted type or does not load into a model in
the sandboxed load check answer 4xx (the untrusted type is named); a body over
the size bound answers 413. Making a version without a reference profile champion
answers 409 unless the body says ``"no_monitoring": true``. A change naming a version that does not exist
answers 404 and writes no audit row. Every change is an audit row and a
ModelEvent written to the registry's outbox in the same transaction: a 200 means
the change is durable, and the event reaches the bus when the broker acknowledges
it (:class:`driftline.registry.outbox.OutboxPublisher`), even if it is down now.
A predictor that refuses a version it cannot load records it as a decision,
``model_load_failed``. A write may name the retrain request it answers
(``"request_id"`` in the body, the retrainer's); it is kept on the audit row
(``GET /v1/audit``) and carried by the ModelEvent.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from driftline.bearer import bearer_matches
from driftline.contract import FeatureContract
from driftline.registry import (InvalidModelName, MonitoringRequired, ProbeUnavailable, Registry, RegistryError,
                                UntrustedArtifact)
from driftline.registry.card import model_card
from driftline.registry.core import ALIASES, MAX_VERSION, MODEL_NAME_PATTERN
from driftline.services.registry.body_limit import BodySizeLimit

DEFAULT_MAX_BODY_BYTES = 256 << 20
"""The largest request body (a registration carries the artifact in base64)."""

ALIAS_PATTERN = "^(" + "|".join(ALIASES) + ")$"

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="e.g. churn")]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN)]
Actor = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Reason = Annotated[str, StringConstraints(max_length=10_000)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
RequestIdText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
REQUEST_ID_DOC = "The retrain request this change answers (the retrainer's); kept on the audit row and the ModelEvent."


class Contract(BaseModel):
    """A feature contract as JSON; unknown keys and wrong types are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    numeric: list[FeatureName] = Field(max_length=10_000)
    categorical: list[FeatureName] = Field(default=[], max_length=10_000)
    classes: list[FeatureName] = Field(default=["0", "1"], max_length=10_000)
    task: Literal["classification", "regression"] = "classification"
    optional: list[FeatureName] = Field(default=[], max_length=10_000)


class NewVersion(BaseModel):
    artifact_b64: str = Field(description="The skops artifact, base64.")
    contract: Contract
    actor: Actor
    reason: Reason = ""
    recipe: dict[str, Any] = {}
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    request_id: RequestIdText | None = Field(None, description=REQUEST_ID_DOC)


class AliasMove(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION)
    actor: Actor
    reason: Reason
    no_monitoring: bool = Field(False, description="Allow a champion without a reference profile (409 otherwise).")
    request_id: RequestIdText | None = Field(None, description=REQUEST_ID_DOC)


class Rollback(BaseModel):
    actor: Actor
    reason: Reason
    alias: str = Field("champion", pattern=ALIAS_PATTERN)


class Decision(BaseModel):
    action: str = Field(pattern="^[a-z_]{1,64}$", description="e.g. rejected")
    actor: Actor
    reason: Reason
    request_id: RequestIdText | None = Field(None, description=REQUEST_ID_DOC)


def create_app(registry: Registry, token: str | None, *, read_token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The registry API over ``registry``.

    Parameters
    ----------
    registry
        The registry served.
    token
        Bearer token for writes; ``None`` disables writes.
    read_token
        Bearer token artifact downloads need (the write token works too); ``None`` leaves them open.
    max_body_bytes
        Larger request bodies answer 413.
    """
    app = FastAPI(title="driftline registry", version="1")
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    def require_token(request: Request) -> None:
        if token is None:
            raise HTTPException(401, "writes are disabled: the server has no DRIFTLINE_REGISTRY_TOKEN")
        if not bearer_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def require_read_token(request: Request) -> None:
        if read_token is not None and not bearer_matches(request.headers.get("authorization"), read_token, token):
            raise HTTPException(401, "artifact downloads need the registry's read token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/v1/models")
    def models() -> list[dict[str, Any]]:
        return [{"model": m, "aliases": registry.aliases(m), "versions": len(registry.versions(m))} for m in registry.models()]

    @app.get("/v1/models/{model}/versions")
    def versions(model: ModelName) -> list[dict[str, Any]]:
        return [v.to_dict() for v in registry.versions(model)]

    @app.get("/v1/models/{model}/versions/{version}")
    def version(model: ModelName, version: VersionNumber) -> dict[str, Any]:
        return _call(registry.get, model, version).to_dict()

    @app.get("/v1/models/{model}/aliases/{alias}")
    def alias(model: ModelName, alias: AliasName) -> dict[str, Any]:
        meta = registry.resolve(model, alias)
        if meta is None:
            raise HTTPException(404, f"model {model!r} has no {alias!r} alias")
        return meta.to_dict()

    @app.get("/v1/models/{model}/versions/{version}/artifact", dependencies=[Depends(require_read_token)])
    def artifact(model: ModelName, version: VersionNumber) -> Response:
        meta = _call(registry.get, model, version)
        return Response(registry.artifacts.get(meta.sha256), media_type="application/octet-stream",
                        headers={"X-Driftline-Sha256": meta.sha256})

    @app.get("/v1/models/{model}/versions/{version}/card", response_class=PlainTextResponse)
    def card(model: ModelName, version: VersionNumber) -> str:
        meta = _call(registry.get, model, version)
        return model_card(meta, registry.aliases(model), registry.audit_log(model))

    @app.get("/v1/audit")
    def audit(model: Annotated[str | None, Query(max_length=128)] = None) -> list[dict[str, Any]]:
        return registry.audit_log(model)

    @app.post("/v1/models/{model}/versions", status_code=201, dependencies=[Depends(require_token)])
    def register(model: ModelName, body: NewVersion) -> dict[str, Any]:
        try:
            artifact = base64.b64decode(body.artifact_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(422, f"artifact_b64 is not valid base64: {exc}") from exc
        try:
            contract = FeatureContract.from_dict(body.contract.model_dump())
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, f"contract: {exc}") from exc
        try:
            meta = registry.register_artifact(
                model, artifact, contract,
                actor=body.actor, reason=body.reason, recipe=body.recipe, params=body.params,
                metrics=body.metrics, lineage=body.lineage, profile=body.profile, request_id=body.request_id)
        except (UntrustedArtifact, InvalidModelName) as exc:
            raise HTTPException(422, str(exc)) from exc
        except ProbeUnavailable as exc:
            raise HTTPException(503, f"cannot check the artifact now, nothing was registered: {exc}",
                                headers={"Retry-After": "5"}) from exc
        return meta.to_dict()

    @app.put("/v1/models/{model}/aliases/{alias}", dependencies=[Depends(require_token)])
    def move_alias(model: ModelName, alias: AliasName, body: AliasMove) -> dict[str, Any]:
        try:
            return _call(registry.set_alias, model, alias, body.version, actor=body.actor, reason=body.reason,
                         no_monitoring=body.no_monitoring, request_id=body.request_id)
        except MonitoringRequired as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.post("/v1/models/{model}/rollback", dependencies=[Depends(require_token)])
    def rollback(model: ModelName, body: Rollback) -> dict[str, Any]:
        return _call(registry.rollback, model, actor=body.actor, reason=body.reason, alias=body.alias)

    @app.post("/v1/models/{model}/versions/{version}/decisions", dependencies=[Depends(require_token)])
    def decision(model: ModelName, version: VersionNumber, body: Decision) -> dict[str, Any]:
        return _call(registry.record, model, version, body.action, actor=body.actor, reason=body.reason,
                     request_id=body.request_id)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
