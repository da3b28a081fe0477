"""Predictor: score micro-batches of feature events with each model's champion (and shadow).

Pure logic. Models come from a loader (the registry, sha256-checked); a model
event that moves an alias makes the next batch use the new version, so an
event is scored by exactly one version per role.

What a prediction carries depends on the contract's task:

- classification: ``scores`` holds every class's probability, ``predicted_label``
  the most likely class, ``score`` the positive-class probability (two classes)
  or the predicted class's probability (more classes, see
  :func:`driftline.models.monitored_score`);
- regression: ``score`` is the predicted value, ``predicted_label`` the same
  value as text, ``scores`` is empty.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from driftline.models import monitored_score, positive_scores, predicted_values, to_frame, value_label
from driftline.registry import LoadedModel
from driftline.timeutil import now_ms, to_ms

log = logging.getLogger(__name__)

#: Roles whose predictions are published. The champion's is the one served; a
#: shadow's is logged beside it so it can be compared on the same events.
SERVED_ROLES = ("champion", "shadow")


class Predictor:
    """
    Parameters
    ----------
    load
        ``(model, alias) -> LoadedModel`` or None when the alias is not set.
    """

    def __init__(self, load: Callable[[str, str], LoadedModel | None]):
        self.load = load
        self._models: dict[tuple[str, str], LoadedModel | None] = {}
        self._stale: set[tuple[str, str]] = set()

    def model(self, name: str, role: str) -> LoadedModel | None:
        key = (name, role)
        if key not in self._models:
            self._models[key] = self.load(name, role)
        elif key in self._stale:
            try:
                self._models[key] = self.load(name, role)
            except Exception as exc:  # registry away or artifact refused: keep serving, retry next batch
                log.warning("predictor: reloading %s@%s failed, keeping the loaded version: %s", name, role, exc)
                return self._models[key]
        self._stale.discard(key)
        return self._models[key]

    def on_model_event(self, event: dict[str, Any]) -> None:
        """Mark a model whose alias moved to another version; it is reloaded (and verified) on next use."""
        alias = event.get("alias")
        if alias not in SERVED_ROLES:
            return
        key = (event["model"], alias)
        loaded = self._models.get(key)
        if loaded is None or loaded.meta.version != event["version"]:
            self._stale.add(key)

    def versions(self) -> dict[tuple[str, str], int]:
        return {key: m.meta.version for key, m in self._models.items() if m is not None}

    def predict(self, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
        """Predictions for ``events``, and (event, reason) for those that cannot be scored."""
        by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_model[event["model"]].append(event)
        predictions: list[dict[str, Any]] = []
        unscorable: list[tuple[dict[str, Any], str]] = []
        for name, group in by_model.items():
            champion = self.model(name, "champion")
            if champion is None:
                unscorable.extend((e, f"model {name!r} has no champion") for e in group)
                continue
            for role in SERVED_ROLES:
                loaded = champion if role == "champion" else self.model(name, role)
                if loaded is not None:
                    predictions.extend(self._score(loaded, role, group))
        return predictions, unscorable

    @staticmethod
    def _score(loaded: LoadedModel, role: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        meta = loaded.meta
        numeric = [e["numeric_features"] for e in events]
        categorical = [e["categorical_features"] for e in events]
        frame = to_frame(meta.contract, numeric, categorical, loaded.estimator)
        if meta.contract.task == "regression":
            values = predicted_values(loaded.estimator, frame)
            score, per_class = values, [{} for _ in events]
            predicted = [value_label(v) for v in values]
        else:
            probabilities, classes = positive_scores(loaded.estimator, frame)
            predicted = classes[np.argmax(probabilities, axis=1)]
            score = monitored_score(probabilities)
            class_names = [str(c) for c in classes]
            per_class = [dict(zip(class_names, row)) for row in probabilities.tolist()]
        scored_at = now_ms()
        out = []
        for i, event in enumerate(events):
            out.append(
                {
                    "prediction_id": f"{event['event_id']}:{meta.version}:{role}",
                    "event_id": event["event_id"],
                    "entity_id": event["entity_id"],
                    "model": meta.model,
                    "model_version": meta.version,
                    "role": role,
                    "score": float(score[i]),
                    "scores": per_class[i],
                    "predicted_label": str(predicted[i]),
                    "numeric_features": numeric[i],
                    "categorical_features": categorical[i],
                    "event_time": to_ms(event["event_time"]),
                    "prediction_time": scored_at,
                }
            )
        return out
