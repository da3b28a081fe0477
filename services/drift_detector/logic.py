"""Drift-detector: windowed PSI per feature and score, river detectors on the error stream,
label coverage, and the alert policy that turns an incident into one retrain request.

Pure logic over decoded records. State is kept per (model, version), because
each version has its own reference profile; a promoted version starts clean.

Every task flows through the same code: the score PSI watches the prediction's
``score`` (positive-class probability, the predicted class's probability for
multiclass, the predicted value for regression), and the river detector reads
the ``error`` of each joined label (0/1 for classification, absolute error for
regression). A 0/1-only detector (DDM, EDDM, HDDM_*) configured for a model
whose errors are not 0/1 is replaced by ADWIN, with a warning.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.drift import (
    SCORE,
    AlertPolicy,
    ConceptDriftDetector,
    LabelCoverage,
    ReferenceProfile,
    RetrainDecision,
    WindowedProfileCounter,
    WindowSpec,
)
from driftline.drift.detectors import BINARY_METHODS
from driftline.timeutil import to_ms

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (model, version)


@dataclass
class DriftOutput:
    metric_rows: list[dict[str, Any]] = field(default_factory=list)  # drift_metrics rows (times as ms)
    signals: list[dict[str, Any]] = field(default_factory=list)  # DriftSignal records
    requests: list[RetrainDecision] = field(default_factory=list)


@dataclass
class _VersionState:
    counter: WindowedProfileCounter
    detector: ConceptDriftDetector
    coverage: LabelCoverage


def columns_of(predictions: list[dict[str, Any]], profile: ReferenceProfile) -> dict[str, np.ndarray]:
    """One array per profiled feature (and the score) from Prediction records."""
    columns: dict[str, np.ndarray] = {}
    for name, feature in profile.features.items():
        if name == SCORE:
            columns[name] = np.fromiter((p["score"] for p in predictions), np.float64, len(predictions))
        elif feature.kind == "numeric":
            columns[name] = np.fromiter((p["numeric_features"].get(name, np.nan) for p in predictions),
                                        np.float64, len(predictions))
        else:
            columns[name] = np.array([p["categorical_features"].get(name) for p in predictions], dtype=object)
    return columns


class DriftDetector:
    """
    Parameters
    ----------
    profile_of
        ``(model, version) -> ReferenceProfile`` or None when the version has none.
    spec
        Windows for the feature and score distributions.
    policy
        When window statistics and detections become retrain requests.
    concept_method, concept_params
        River detector over the error stream, per model name (default ADWIN).
    coverage_horizon_ms
        Label coverage is reported for prediction windows this recent (event time);
        older windows are final and forgotten.
    """

    def __init__(self, profile_of: Callable[[str, int], ReferenceProfile | None], spec: WindowSpec,
                 policy: AlertPolicy, concept_method: dict[str, str] | None = None,
                 concept_params: dict[str, dict] | None = None, coverage_horizon_ms: int = 86_400_000):
        self.profile_of = profile_of
        self.spec = spec
        self.policy = policy
        self.concept_method = concept_method or {}
        self.concept_params = concept_params or {}
        self.coverage_horizon_ms = coverage_horizon_ms
        self._versions: dict[Key, _VersionState | None] = {}

    def _state(self, key: Key) -> _VersionState | None:
        if key not in self._versions:
            profile = self.profile_of(*key)
            if profile is None:
                log.warning("no reference profile for %s v%s: its data drift is not monitored", *key)
                self._versions[key] = None
            else:
                self._versions[key] = self._new_state(key, profile)
        return self._versions[key]

    def _new_state(self, key: Key, profile: ReferenceProfile) -> _VersionState:
        size_ms = self.spec.size if self.spec.by == "time" else 60_000
        method = self.concept_method.get(key[0], "ADWIN")
        return _VersionState(
            WindowedProfileCounter(profile, self.spec),
            ConceptDriftDetector(method, **self.concept_params.get(key[0], {})),
            LabelCoverage(size_ms),
        )

    def _champion_groups(self, records: list[dict[str, Any]]):
        """(key, state, records) per monitored (model, version), champion records only."""
        for key, group in _by_version(r for r in records if r["role"] == "champion").items():
            state = self._state(key)
            if state is not None:
                yield key, state, group

    # -- predictions: data drift and coverage ---------------------------------------------

    def observe_predictions(self, predictions: list[dict[str, Any]], now_ms: int) -> DriftOutput:
        out = DriftOutput()
        for key, state, group in self._champion_groups(predictions):
            times = np.fromiter((to_ms(p["event_time"]) for p in group), np.int64, len(group))
            state.coverage.add_predictions(times)
            for window in state.counter.update(columns_of(group, state.counter.profile), times):
                stats = window.stats(state.counter.profile)
                for signal in stats.to_signals():
                    out.metric_rows.append(_row(key, signal, now_ms))
                    if signal["statistic"] == "psi":
                        out.signals.append(_signal(key, signal, now_ms))
                decision = self.policy.observe_window(key[0], key[1], stats)
                if decision is not None:
                    out.requests.append(decision)
                out.metric_rows.extend(self._coverage_rows(key, state, now_ms))
                state.coverage.evict(before_ms=(stats.time_ms or 0) - self.coverage_horizon_ms)
        return out

    def _coverage_rows(self, key: Key, state: _VersionState, now_ms: int, starts: set[int] | None = None) -> list[dict]:
        """Coverage rows of the open coverage windows (or those starting at ``starts``)."""
        rows = []
        for window in state.coverage.windows():
            if starts is not None and window.start not in starts:
                continue
            values = {"coverage": window.coverage, "label_delay_mean_ms": window.delay_mean_ms,
                      "label_delay_p90_ms": window.delay_quantile_ms(0.9)}
            for statistic, value in values.items():
                if value is not None and np.isfinite(value):
                    rows.append(_row(key, {"kind": "coverage", "feature": "__labels__", "statistic": statistic,
                                           "value": float(value), "band": "", "window_start": window.start,
                                           "window_end": window.end, "n": window.n_predictions}, now_ms))
        return rows

    # -- joined labels: concept drift ------------------------------------------------------

    def observe_labeled(self, labeled: list[dict[str, Any]], now_ms: int) -> DriftOutput:
        out = DriftOutput()
        for key, state, group in self._champion_groups(labeled):
            times = np.fromiter((to_ms(r["event_time"]) for r in group), np.int64, len(group))
            state.coverage.add_labels(times, np.array([to_ms(r["label_time"]) for r in group], dtype=np.int64))
            # Late labels raise the coverage of old windows: rewrite the rows of those they touched.
            touched = set((np.unique(times // state.coverage.size_ms) * state.coverage.size_ms).tolist())
            out.metric_rows.extend(self._coverage_rows(key, state, now_ms, touched))
            errors = np.array([r["error"] for r in group], dtype=np.float64)
            if state.detector.method in BINARY_METHODS and not np.all((errors == 0.0) | (errors == 1.0)):
                log.warning("%s v%s: errors are not 0/1 (a regression model?); %s needs 0/1 errors, using ADWIN",
                            key[0], key[1], state.detector.method)
                state.detector = ConceptDriftDetector("ADWIN")
            first = state.detector.n_seen
            for index in state.detector.update(errors):
                at = int(times[index - first])
                signal = {"kind": "concept", "feature": "__error__", "statistic": state.detector.method,
                          "value": float(index), "band": "act", "window_start": index, "window_end": index,
                          "n": state.detector.n_seen}
                out.metric_rows.append(_row(key, signal, now_ms))
                out.signals.append(_signal(key, signal, now_ms))
                decision = self.policy.observe_concept(key[0], key[1], state.detector.method, index, at)
                if decision is not None:
                    out.requests.append(decision)
        return out

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        versions = [
            {"model": m, "version": v, "counter": s.counter.snapshot(),
             "detector": base64.b64encode(s.detector.snapshot()).decode(), "coverage": s.coverage.snapshot()}
            for (m, v), s in self._versions.items() if s is not None
        ]
        return json.dumps({"format": 1, "policy": self.policy.snapshot(), "versions": versions}).encode()

    def restore(self, snapshot: bytes) -> None:
        data = json.loads(snapshot)
        self.policy.restore(data["policy"])
        for item in data["versions"]:
            key = (item["model"], item["version"])
            state = self._state(key)
            if state is None:
                continue
            state.counter.restore(item["counter"])
            state.detector.restore(base64.b64decode(item["detector"]))
            state.coverage.restore(item["coverage"])


def _by_version(records) -> dict[Key, list[dict[str, Any]]]:
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["model"], r["model_version"])].append(r)
    return groups


def _row(key: Key, signal: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A ``drift_metrics`` row (times as ms)."""
    return {"model": key[0], "model_version": key[1], **signal, "computed_at": now_ms}


def _signal(key: Key, signal: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {"model": key[0], "model_version": key[1], **signal, "detected_at": now_ms}

