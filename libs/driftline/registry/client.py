"""The registry over HTTP, with the same methods as :class:`driftline.registry.Registry`.

Services in distributed mode use this; the artifact's sha256 and its type
names are checked here, on the loading side, against the metadata the registry
returned and the same exact allow-list the registry applies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import httpx

from driftline.contract import FeatureContract
from driftline.registry.artifacts import dumps, loads_verified
from driftline.registry.core import LoadedModel, ModelVersion, MonitoringRequired, RegistryError
from driftline.registry.trusted_types import validated_extra_types


def _request(request_id: str | None) -> dict[str, str]:
    """The body field naming a retrain request; left out when there is none (an older server refuses nothing)."""
    return {} if request_id is None else {"request_id": request_id}


def _version(data: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**{**data, "contract": FeatureContract.from_dict(data["contract"])})


class RegistryClient:
    """A registry service at ``url``.

    Parameters
    ----------
    url
        The registry service, e.g. ``http://registry:8001``.
    token
        ``DRIFTLINE_REGISTRY_TOKEN``: sent with every request; writes need it.
    read_token
        ``DRIFTLINE_REGISTRY_READ_TOKEN``: sent instead of ``token`` to download
        artifacts, which a registry started with a read token requires.
    timeout_s
        Per request.
    trusted_types
        Exact type names trusted beyond driftline's allow-list when loading
        (``Settings.trusted_types``); names driftline never trusts raise ValueError.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0, *,
                 read_token: str | None = None, trusted_types: Iterable[str] = ()):
        self.trusted_types = validated_extra_types(trusted_types)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._artifact_headers = {"Authorization": f"Bearer {read_token}"} if read_token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def _get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        response = self._http.get(path, params=params or None, headers=headers)
        return self._check(response)

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code == 404:
            raise RegistryError(response.json().get("detail", response.text))
        if response.status_code == 409:
            raise MonitoringRequired(response.json().get("detail", response.text))
        if response.is_client_error:  # say why (e.g. which untrusted type), not just the status
            raise httpx.HTTPStatusError(
                f"{response.status_code} from {response.request.method} {response.request.url.path}: "
                f"{response.text[:2000]}", request=response.request, response=response)
        response.raise_for_status()
        return response

    def get(self, model: str, version: int) -> ModelVersion:
        return _version(self._get(f"/v1/models/{model}/versions/{version}").json())

    def resolve(self, model: str, alias: str) -> ModelVersion | None:
        try:
            return _version(self._get(f"/v1/models/{model}/aliases/{alias}").json())
        except RegistryError:
            return None

    def load(self, model: str, alias: str = "champion", version: int | None = None) -> LoadedModel:
        meta = self.get(model, version) if version is not None else self.resolve(model, alias)
        if meta is None:
            raise RegistryError(f"model {model!r} has no {alias!r} alias")
        data = self._get(f"/v1/models/{model}/versions/{meta.version}/artifact", self._artifact_headers).content
        return LoadedModel(meta, loads_verified(data, meta.sha256, f"{model} v{meta.version}", self.trusted_types))

    def models(self) -> list[str]:
        return [m["model"] for m in self._get("/v1/models").json()]

    def versions(self, model: str) -> list[ModelVersion]:
        return [_version(v) for v in self._get(f"/v1/models/{model}/versions").json()]

    def aliases(self, model: str) -> dict[str, int]:
        return next((m["aliases"] for m in self._get("/v1/models").json() if m["model"] == model), {})

    def audit_log(self, model: str | None = None) -> list[dict[str, Any]]:
        return self._get("/v1/audit", **({"model": model} if model else {})).json()

    def register(self, model: str, estimator: Any, contract: FeatureContract, *, actor: str, reason: str = "",
                 **fields: Any) -> ModelVersion:
        return self.register_artifact(model, dumps(estimator), contract, actor=actor, reason=reason, **fields)

    def register_artifact(self, model: str, artifact: bytes, contract: FeatureContract, *, actor: str,
                          reason: str = "", request_id: str | None = None, **fields: Any) -> ModelVersion:
        body = {"artifact_b64": base64.b64encode(artifact).decode(), "contract": contract.to_dict(),
                "actor": actor, "reason": reason, **{k: v or {} for k, v in fields.items()}, **_request(request_id)}
        return _version(self._check(self._http.post(f"/v1/models/{model}/versions", json=body)).json())

    def set_alias(self, model: str, alias: str, version: int, *, actor: str, reason: str,
                  no_monitoring: bool = False, request_id: str | None = None) -> dict[str, Any]:
        body = {"version": version, "actor": actor, "reason": reason, "no_monitoring": no_monitoring,
                **_request(request_id)}
        return self._check(self._http.put(f"/v1/models/{model}/aliases/{alias}", json=body)).json()

    def rollback(self, model: str, *, actor: str, reason: str, alias: str = "champion") -> dict[str, Any]:
        body = {"actor": actor, "reason": reason, "alias": alias}
        return self._check(self._http.post(f"/v1/models/{model}/rollback", json=body)).json()

    def record(self, model: str, version: int, action: str, *, actor: str, reason: str,
               request_id: str | None = None) -> dict[str, Any]:
        body = {"action": action, "actor": actor, "reason": reason, **_request(request_id)}
        return self._check(self._http.post(f"/v1/models/{model}/versions/{version}/decisions", json=body)).json()

    def close(self) -> None:
        self._http.close()
