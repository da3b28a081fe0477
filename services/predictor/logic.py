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

What it refuses, without ever stopping:

- a model version that does not load (its artifact fails the sha256 check or
  names an untrusted type: :class:`ModelRefused`). The last good version of that
  model and alias keeps serving; with none, the model's events are unscorable
  with the refusal as the reason. The refused version is tried again after
  ``retry_after_s``, or at once when a model event moves that alias. A predictor
  that has no good version in memory (it just started) asks ``fallback`` for the
  newest earlier version of that alias that loads, so a restart serves what ran
  before the refused promotion. Refusals
  are kept for the service to report (:meth:`Predictor.take_refusals`).
  A registry that cannot be reached is not a refusal: the loader raises
  :class:`driftline.failure.DependencyUnavailable` and the batch is retried.
- an event with a numeric feature that is infinite or beyond float32's range
  (scikit-learn's float32 estimators, random forests, turn ``1e308`` into
  infinity and refuse the whole input): unscorable, the reason names the feature. NaN stays a missing
  value, as it is for every contract.
- a group whose scoring still raises is scored event by event, so only the
  events that raise on their own are unscorable.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import chain
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from driftline.model_input import ColumnarInput, numeric_matrix
from driftline.models import frame_of, monitored_score, positive_scores, predicted_values, string_columns, value_label
from driftline.failure import is_transient
from driftline.registry import LoadedModel
from driftline.telemetry import BAD_FEATURES, SCORING_FAILED, UNSCORABLE
from driftline.timeutil import now_ms, to_ms

log = logging.getLogger(__name__)

#: Roles whose predictions are published. The champion's is the one served; a
#: shadow's is logged beside it so it can be compared on the same events.
SERVED_ROLES = ("champion", "shadow")

#: The largest magnitude float32 holds. scikit-learn's decision trees and random forests compute in
#: float32 (1e308 becomes infinity and they refuse the whole input); a linear model scores it as
#: an overflowed, meaningless 1.0.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class ModelRefused(Exception):
    """A model version that cannot be used: its artifact does not verify, or does not load.

    Raised by a predictor's loader; ``reason`` says why (e.g. the sha256 mismatch).
    """

    def __init__(self, model: str, alias: str, version: int, reason: str):
        super().__init__(f"{model} v{version} ({alias}) refused: {reason}")
        self.model, self.alias, self.version, self.reason = model, alias, version, reason


@dataclass(frozen=True)
class Refusal:
    """A refused load of ``model``'s ``alias`` (at ``version``), and when it may be tried again."""

    model: str
    alias: str
    version: int
    reason: str
    retry_at: float

    @property
    def message(self) -> str:
        return f"model {self.model!r} {self.alias} v{self.version} refused: {self.reason}"


class Unscorable(NamedTuple):
    """An event the predictor could not score, why, and the reason's bounded category (for metrics)."""

    event: dict[str, Any]
    reason: str
    category: str = UNSCORABLE


def feature_problem(numeric: dict[str, float]) -> str | None:
    """Why these numeric features cannot be scored, naming the feature; None when they can.

    >>> feature_problem({"speed": 1.5, "load": float("nan")}) is None
    True
    >>> feature_problem({"speed": float("inf")})
    "feature 'speed' is inf: not a finite number"
    >>> feature_problem({"speed": 1e308})
    "feature 'speed' is 1e+308: beyond float32's range (3.4e+38), which models compute in"
    """
    for name, value in numeric.items():
        if value is None or math.isnan(value):
            continue  # missing: the model's imputer decides
        if math.isinf(value):
            return f"feature {name!r} is {value}: not a finite number"
        if abs(value) > FLOAT32_MAX:
            return f"feature {name!r} is {value!r}: beyond float32's range ({FLOAT32_MAX:.1e}), which models compute in"
    return None


class Predictor:
    """
    Parameters
    ----------
    load
        ``(model, alias) -> LoadedModel`` or None when the alias is not set. Raises
        :class:`ModelRefused` for a version that cannot be used, anything transient
        (:func:`driftline.failure.is_transient`) when the registry is away.
    retry_after_s
        How long a refused version waits before it is loaded again (a model event
        for its alias retries at once).
    fallback
        ``(model, alias, refused_version) -> LoadedModel | None``: an earlier version
        of the alias that loads, used when a refusal leaves nothing to serve.
    clock
        Seconds, monotonic; injectable for tests.
    """

    def __init__(self, load: Callable[[str, str], LoadedModel | None], *, retry_after_s: float = 30.0,
                 fallback: Callable[[str, str, int], LoadedModel | None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.load = load
        self.retry_after_s = retry_after_s
        self.fallback = fallback
        self.clock = clock
        self._models: dict[tuple[str, str], LoadedModel | None] = {}  # the last good load (None: alias unset)
        self._stale: set[tuple[str, str]] = set()
        self._refused: dict[tuple[str, str], Refusal] = {}
        self._new_refusals: list[Refusal] = []

    def model(self, name: str, role: str) -> LoadedModel | None:
        """The version of ``name`` serving ``role``: the newest that loaded, or None."""
        key = (name, role)
        refusal = self._refused.get(key)
        if refusal is not None:  # a refused version waits for its back-off or a model event
            due = key in self._stale or self.clock() >= refusal.retry_at
        else:
            due = key not in self._models or key in self._stale
        if not due:
            return self._models.get(key)
        try:
            loaded = self.load(name, role)
        except ModelRefused as refused:
            self._refuse(key, refused)
            self._stale.discard(key)
            kept = self._models.get(key)
            if kept is None and self.fallback is not None:
                try:
                    kept = self._models[key] = self.fallback(name, role, refused.version)
                except Exception as exc:  # noqa: BLE001 - no fallback: the refusal stands alone
                    log.warning("predictor: no earlier version of %s@%s to fall back on: %s", name, role, exc)
            if kept is not None:
                log.warning("predictor: %s; %s v%d keeps serving", self._refused[key].message, name, kept.meta.version)
            return kept
        except Exception as exc:
            if is_transient(exc) and key in self._models:  # registry away: keep serving, retry next batch
                log.warning("predictor: reloading %s@%s failed, keeping the loaded version: %s", name, role, exc)
                return self._models[key]
            raise
        self._models[key] = loaded
        self._refused.pop(key, None)
        self._stale.discard(key)
        return loaded

    def _refuse(self, key: tuple[str, str], refused: ModelRefused) -> None:
        previous = self._refused.get(key)
        refusal = Refusal(refused.model, refused.alias, refused.version, refused.reason,
                          self.clock() + self.retry_after_s)
        self._refused[key] = refusal
        if previous is None or (previous.version, previous.reason) != (refusal.version, refusal.reason):
            log.error("predictor: %s", refusal.message)
            self._new_refusals.append(refusal)  # reported once per version and reason, not at every retry

    def take_refusals(self) -> list[Refusal]:
        """Refusals seen since the last call (the service reports them: metric, audit row)."""
        refusals, self._new_refusals = self._new_refusals, []
        return refusals

    def refusal(self, name: str, role: str) -> Refusal | None:
        """The refusal in force for ``name``'s ``role``, if its last load was refused."""
        return self._refused.get((name, role))

    def on_model_event(self, event: dict[str, Any]) -> None:
        """Mark a model whose alias moved to another version; it is reloaded (and verified) on next use.

        A refused version is tried again at the next event for its alias, whatever version it names.
        """
        alias = event.get("alias")
        if alias not in SERVED_ROLES:
            return
        key = (event["model"], alias)
        loaded = self._models.get(key)
        if loaded is None or loaded.meta.version != event["version"] or key in self._refused:
            self._stale.add(key)

    def versions(self) -> dict[tuple[str, str], int]:
        return {key: m.meta.version for key, m in self._models.items() if m is not None}

    def predict(self, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Unscorable]]:
        """Predictions for ``events``, and :class:`Unscorable` for those that cannot be scored."""
        by_model: dict[str, list[int]] = defaultdict(list)
        unscorable: list[Unscorable] = []
        for i, (event, problem) in enumerate(zip(events, _feature_problems(events))):
            if problem is None:
                by_model[event["model"]].append(i)
            else:
                unscorable.append(Unscorable(event, problem, BAD_FEATURES))
        predictions: list[dict[str, Any]] = []
        for name, rows in by_model.items():
            group = [events[i] for i in rows]
            champion = self.model(name, "champion")
            if champion is None:
                refusal = self.refusal(name, "champion")
                reason = refusal.message if refusal is not None else f"model {name!r} has no champion"
                unscorable.extend(Unscorable(e, reason) for e in group)
                continue
            scored, failed = self._score_each(champion, "champion", group)
            predictions.extend(scored)
            unscorable.extend(failed)
            shadow = self.model(name, "shadow")
            if shadow is not None:
                if failed:  # the shadow scores what the champion served
                    served_ids = {p["event_id"] for p in scored}
                    rows = [i for i, e in zip(rows, group) if e["event_id"] in served_ids]
                    group = [events[i] for i in rows]
                scored, failed = self._score_each(shadow, "shadow", group)
                predictions.extend(scored)
                for event, reason, _category in failed:  # the champion served these: a shadow's failure is not the event's
                    log.warning("predictor: shadow %s v%d could not score %s: %s", name, shadow.meta.version,
                                event["event_id"], reason)
        return predictions, unscorable

    @classmethod
    def _score_each(cls, loaded: LoadedModel, role: str, events: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[Unscorable]]:
        """Score ``events`` together; if that raises, one by one, so one bad event fails alone."""
        if not events:
            return [], []
        try:
            return cls._score(loaded, role, events), []
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(events) == 1:
                return [], [Unscorable(events[0], _scoring_error(loaded, exc), SCORING_FAILED)]
            log.warning("predictor: scoring %d events with %s v%d raised (%s); scoring them one by one",
                        len(events), loaded.meta.model, loaded.meta.version, exc)
        scored: list[dict[str, Any]] = []
        failed: list[Unscorable] = []
        for event in events:
            try:
                scored.extend(cls._score(loaded, role, [event]))
            except Exception as exc:
                if is_transient(exc):
                    raise
                failed.append(Unscorable(event, _scoring_error(loaded, exc), SCORING_FAILED))
        return scored, failed

    @staticmethod
    def _score(loaded: LoadedModel, role: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        meta = loaded.meta
        contract = meta.contract
        n = len(events)
        numeric_rows = [e["numeric_features"] for e in events]
        categorical_rows = [e["categorical_features"] for e in events]
        numeric = numeric_matrix(numeric_rows, contract.numeric)
        numeric_columns = {name: numeric[:, j] for j, name in enumerate(contract.numeric)}
        categorical_columns = string_columns(categorical_rows, contract.categorical)
        # driftline's own pipelines: their arithmetic on numpy columns, the same scores without
        # a DataFrame (driftline.model_input); anything else goes through scikit-learn as it was.
        columnar = ColumnarInput.of(loaded.estimator, contract)
        matrix = None if columnar is None else columnar.transform(numeric_columns, categorical_columns, n)
        if matrix is not None:
            estimator, model_input = columnar.final, matrix
        else:
            estimator = loaded.estimator
            model_input = frame_of(contract, numeric_columns, categorical_columns, estimator)
        if contract.task == "regression":
            values = predicted_values(estimator, model_input)
            scores = values.tolist()
            per_class: list[dict[str, float]] = [{} for _ in range(n)]
            predicted = [value_label(v) for v in scores]
        else:
            probabilities, classes = positive_scores(estimator, model_input)
            predicted = classes[np.argmax(probabilities, axis=1)].tolist()
            scores = monitored_score(probabilities).tolist()
            class_names = [str(c) for c in classes]
            per_class = [dict(zip(class_names, row)) for row in probabilities.tolist()]
        scored_at = now_ms()
        model, version = meta.model, meta.version
        suffix = f":{version}:{role}"
        return [
            {
                "prediction_id": event["event_id"] + suffix,
                "event_id": event["event_id"],
                "entity_id": event["entity_id"],
                "model": model,
                "model_version": version,
                "role": role,
                "score": score,
                "scores": classes_scores,
                "predicted_label": label,
                "numeric_features": num,
                "categorical_features": cat,
                "event_time": to_ms(event["event_time"]),
                "prediction_time": scored_at,
            }
            for event, score, classes_scores, label, num, cat in zip(
                events, scores, per_class, predicted, numeric_rows, categorical_rows)
        ]


def _feature_problems(events: list[dict[str, Any]]) -> list[str | None]:
    """:func:`feature_problem` for a whole batch, per event: one comparison over every numeric
    value at once (whatever names they have: a producer writing straight to the topic may send
    any); only the events it flags are walked feature by feature, for the same message as one
    by one."""
    rows = [e["numeric_features"] for e in events]
    try:
        values = np.array(list(chain.from_iterable(map(dict.values, rows))), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # not plain numbers (hand-made records): one by one
        return [feature_problem(row) for row in rows]
    with np.errstate(invalid="ignore"):
        out_of_range = np.abs(values) > FLOAT32_MAX
    problems: list[str | None] = [None] * len(rows)
    if out_of_range.any():
        row_of_value = np.repeat(np.arange(len(rows)), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
        for i in np.unique(row_of_value[out_of_range]).tolist():
            problems[i] = feature_problem(rows[i])
    return problems


def _scoring_error(loaded: LoadedModel, exc: Exception) -> str:
    return f"{loaded.meta.model} v{loaded.meta.version} could not score it: {type(exc).__name__}: {exc}"
