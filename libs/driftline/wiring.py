"""How each service is assembled from the shared parts, in either run mode.

Embedded mode and ``driftline serve`` both build services here, so the two
modes differ only in the bus, the store and the registry they are handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftline.bus import Bus
from driftline.codec import Codec
from driftline.config import Settings
from driftline.runner import Runner
from driftline.store import Store
from driftline.timeutil import now_ms
from driftline.services.label_joiner.service import LabelJoinerService
from driftline.services.predictor.service import PredictorService


@dataclass
class Context:
    settings: Settings
    bus: Bus
    codec: Codec
    store: Store
    registry: Any  # driftline.registry.Registry or RegistryClient: the same methods


def predictor(ctx: Context) -> PredictorService:
    return PredictorService.from_registry(ctx.registry)


def label_joiner(ctx: Context) -> LabelJoinerService:
    return LabelJoinerService.over_store(ctx.store, ctx.settings.label_ttl_ms, now_ms())


#: Services a Runner drives (the HTTP ones, ingest and registry, are served by uvicorn).
RUNNER_SERVICES: dict[str, Callable[[Context], Any]] = {
    "predictor": predictor,
    "label-joiner": label_joiner,
}


def make_runner(name: str, ctx: Context) -> Runner:
    service = RUNNER_SERVICES[name](ctx)
    state = None
    if hasattr(service, "snapshot"):
        from driftline.state import StateStore

        state = StateStore(ctx.store)
    return Runner(service, ctx.bus, ctx.codec, ctx.store, batch_size=ctx.settings.batch_size,
                  poll_timeout_s=ctx.settings.poll_timeout_s, state=state)
