"""The predictor as a runnable service: features and model events in, predictions out."""

from __future__ import annotations

from driftline import telemetry
from driftline.deadletter import dead_letter
from driftline.registry import Registry
from driftline.runner import Incoming, Output
from driftline.topics import FEATURES, MODELS, PREDICTIONS
from driftline.services.predictor.logic import Predictor


class PredictorService:
    name = "predictor"
    topics = [FEATURES]
    control_topics = [MODELS]

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @classmethod
    def from_registry(cls, registry: Registry) -> PredictorService:
        def load(model: str, alias: str):
            return registry.load(model, alias) if registry.resolve(model, alias) else None

        return cls(Predictor(load))

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
            for event, reason in unscorable:
                m = message_of[id(event)]
                out.dead(dead_letter(self.name, m.topic, m.value, reason, partition=m.partition, offset=m.offset, key=m.key),
                         reason=telemetry.UNSCORABLE)
        telemetry.observe_champions(self.name, self.predictor.versions())
        return out
