"""The predictor as a runnable service: features and model events in, predictions out.

A model version the predictor refuses to load is reported three ways, once per
version and reason: the ``driftline_model_load_failures_total`` counter, an
error log line, and a ``model_load_failed`` audit row in the registry.
"""

from __future__ import annotations

import logging

from driftline import telemetry
from driftline.deadletter import dead_letter
from driftline.failure import DependencyUnavailable, is_transient
from driftline.registry import Registry
from driftline.runner import Incoming, Output
from driftline.topics import FEATURES, MODELS, PREDICTIONS
from driftline.services.predictor.logic import ModelRefused, Predictor, Refusal

log = logging.getLogger(__name__)

#: The audit action a refused model version is recorded under.
MODEL_LOAD_FAILED = "model_load_failed"


def _registry_away(exc: BaseException) -> bool:
    """Unreachable, timed out, or answering 5xx: the registry, not the model, is the problem."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return is_transient(exc) or (isinstance(status, int) and status >= 500)


class PredictorService:
    name = "predictor"
    topics = [FEATURES]
    control_topics = [MODELS]

    def __init__(self, predictor: Predictor, registry: Registry | None = None):
        self.predictor = predictor
        self.registry = registry  # where refusals are recorded as audit rows; None: only metric and log
        self._unrecorded: list[Refusal] = []

    @classmethod
    def from_registry(cls, registry: Registry, *, retry_after_s: float = 30.0) -> PredictorService:
        def load(model: str, alias: str):
            try:
                meta = registry.resolve(model, alias)
            except Exception as exc:
                if _registry_away(exc):
                    raise DependencyUnavailable(f"registry: resolving {model}@{alias}: {exc}") from exc
                raise
            if meta is None:
                return None
            try:
                return registry.load(model, version=meta.version)
            except Exception as exc:
                if _registry_away(exc):
                    raise DependencyUnavailable(f"registry: loading {model} v{meta.version}: {exc}") from exc
                raise ModelRefused(model, alias, meta.version, f"{type(exc).__name__}: {exc}") from exc

        def fallback(model: str, alias: str, refused: int):
            """The newest version ``alias`` pointed at before, other than ``refused``, that loads."""
            moves = [row["version"] for row in reversed(registry.audit_log(model))
                     if row["alias"] == alias and row["action"] in ("alias_moved", "rolled_back")]
            for version in dict.fromkeys(v for v in moves if v != refused):  # newest first, each once
                try:
                    loaded = registry.load(model, version=version)
                except Exception as exc:
                    if _registry_away(exc):
                        raise
                    continue
                log.warning("predictor: %s@%s v%d is refused; serving v%d, the alias's last version that loads",
                            model, alias, refused, version)
                return loaded
            return None

        return cls(Predictor(load, retry_after_s=retry_after_s, fallback=fallback), registry)

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        out = Output()
        # Model events come first in a batch: the whole batch is scored by the versions they point at.
        for item in batch:
            if item.topic == MODELS:
                self.predictor.on_model_event(item.record)
        features = [item for item in batch if item.topic == FEATURES]
        predictions, unscorable = self.predictor.predict([item.record for item in features])
        for prediction in predictions:
            out.publish(PREDICTIONS, prediction["event_id"], prediction)
        if unscorable:
            message_of = {id(item.record): item.message for item in features}
            for event, reason, category in unscorable:
                m = message_of[id(event)]
                out.dead(dead_letter(self.name, m.topic, m.value, reason, partition=m.partition, offset=m.offset, key=m.key),
                         reason=category)
        self._report_refusals()
        telemetry.observe_champions(self.name, self.predictor.versions())
        return out

    def _report_refusals(self) -> None:
        for refusal in self.predictor.take_refusals():
            telemetry.MODEL_LOAD_FAILURES.labels(self.name, refusal.model, refusal.alias).inc()
            self._unrecorded.append(refusal)
        if self.registry is None:
            self._unrecorded.clear()
            return
        while self._unrecorded:
            refusal = self._unrecorded[0]
            try:
                self.registry.record(refusal.model, refusal.version, MODEL_LOAD_FAILED, actor=self.name,
                                     reason=refusal.message)
            except Exception as exc:  # noqa: BLE001 - an audit row must not stop scoring
                if _registry_away(exc):  # try again with the next batch
                    log.warning("predictor: cannot record %s in the registry now (%s); will retry",
                                MODEL_LOAD_FAILED, exc)
                    return
                log.error("predictor: the registry refused the %s audit row for %s v%d: %s",
                          MODEL_LOAD_FAILED, refusal.model, refusal.version, exc)
            self._unrecorded.pop(0)
