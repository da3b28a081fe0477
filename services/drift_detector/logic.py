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

Each record counts once. A predictor killed between its flush and its commit
republishes a batch of predictions; a label-joiner killed likewise republishes
its ``labeled`` records. The detector remembers the most recent champion
``prediction_id``\ s and joined (model, event_id)s (bounded:
:class:`~driftline.drift.recent.RecentKeys`, checkpointed with the rest of its
state) and skips a record it has already counted, so the PSI windows, the
coverage and the concept detector's ``n`` count each prediction and each joined
label once.

Event time (README, "Event time and late events"). Windows close on a watermark per
model: the minimum over the ``predictions`` partitions that carry it
(:class:`~driftline.drift.watermark.PartitionWatermarks`: idle partitions left out, an
event far ahead unable to move it). An event whose window already closed is counted in
that window's ``late_events`` row (kind ``data``, feature ``__events__``); an event far
ahead is counted in its own window like any other, without moving the watermark, and in
that window's ``ahead_events`` row. Nothing is dropped silently. Concept detections carry
the event time, partition and offset of the labeled record whose error fired the
detector, and its index in the error stream (``stream_index``).

Memory is bounded per version too: a version that has received nothing for
``retire_after_ms`` while a newer version of its model is monitored is retired,
its open windows written as a last (partial) window first, so nothing is lost.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
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
from driftline.drift.calibration import ThresholdRule
from driftline.drift.detectors import BINARY_METHODS
from driftline.drift.recent import RecentKeys
from driftline.drift.watermark import PartitionWatermarks
from driftline.services.drift_detector.retrain_loop import OutcomeSeen, outcome_of
from driftline.timeutil import to_ms

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (model, version)


@dataclass
class DriftOutput:
    metric_rows: list[dict[str, Any]] = field(default_factory=list)  # drift_metrics rows (times as ms)
    signals: list[dict[str, Any]] = field(default_factory=list)  # DriftSignal records
    requests: list[RetrainDecision] = field(default_factory=list)
    late_events: dict[str, int] = field(default_factory=dict)  # model -> events that came after their window closed
    ahead_events: dict[str, int] = field(default_factory=dict)  # model -> events far ahead of the watermark


#: Where a record was read: (partition, offset). A detector fed without positions treats its
#: input as one partition.
Position = tuple[int, int | None]
EVENTS = "__events__"  # the feature name of late_events / ahead_events rows: they count whole events


@dataclass
class _VersionState:
    counter: WindowedProfileCounter
    detector: ConceptDriftDetector
    coverage: LabelCoverage


def columns_of(predictions: list[dict[str, Any]], profile: ReferenceProfile) -> dict[str, np.ndarray]:
    """One array per profiled feature (and the score) from Prediction records.

    A feature missing from a record is NaN (numeric) or None (categorical). Every record's
    map is read once for all features (one ``itemgetter`` call), not once per feature.
    """
    n = len(predictions)
    columns: dict[str, np.ndarray] = {}
    numeric, categorical = [], []
    for name, feature in profile.features.items():
        if name == SCORE:
            columns[name] = np.fromiter(map(_SCORE, predictions), np.float64, n)
        elif feature.kind == "numeric":
            numeric.append(name)
        else:
            categorical.append(name)
    if numeric:
        columns.update(_numeric_columns(list(map(_NUMERIC, predictions)), numeric))
    if categorical:
        columns.update(_categorical_columns(list(map(_CATEGORICAL, predictions)), categorical))
    return {name: columns[name] for name in profile.features}


def _numeric_columns(maps: list[dict[str, float]], names: list[str]) -> dict[str, np.ndarray]:
    n, k = len(maps), len(names)
    get = itemgetter(*names)
    try:  # every record has every feature (the usual case): no Python code runs per record
        values = np.fromiter(chain.from_iterable(map(get, maps)) if k > 1 else map(get, maps), np.float64, n * k)
    except KeyError:
        return {name: np.fromiter((m.get(name, np.nan) for m in maps), np.float64, n) for name in names}
    values = np.ascontiguousarray(values.reshape(n, k).T)
    return {name: values[j] for j, name in enumerate(names)}


def _categorical_columns(maps: list[dict[str, str]], names: list[str]) -> dict[str, np.ndarray]:
    n, k = len(maps), len(names)
    get = itemgetter(*names)
    try:  # every record has every feature, all strings: binned without a conversion
        values = list(chain.from_iterable(map(get, maps))) if k > 1 else list(map(get, maps))
    except KeyError:
        values = None
    if values is None or (values and set(map(type, values)) != {str}):  # None, NaN...: missing, as before
        return {name: np.array([m.get(name) for m in maps], dtype=object) for name in names}
    table = np.ascontiguousarray(np.array(values, dtype=str).reshape(n, k).T)
    return {name: table[j] for j, name in enumerate(names)}


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
    dedupe_predictions, dedupe_labeled
        How many recent prediction ids and joined (model, event_id)s are remembered to
        recognise a republished record.
    retire_after_ms
        Wall time without records after which a version superseded by a newer one is retired.
    max_skew_ms
        An event later than its partition's watermark (or the wall clock) by more than this
        cannot move the watermark (:class:`~driftline.drift.watermark.PartitionWatermarks`).
    idle_timeout_ms
        Wall time without records after which a partition no longer holds the watermark back.
    partitions
        The ``predictions`` partitions this detector reads, if known: each holds every
        model's watermark back until it delivers or is idle (partitions not listed join
        when they deliver).
    thresholds
        How each window's alarm levels are set (fixed bands or a false-alarm rate); they are
        written with its rows and read by the policy. Default: the policy's own fixed levels.
    """

    def __init__(self, profile_of: Callable[[str, int], ReferenceProfile | None], spec: WindowSpec,
                 policy: AlertPolicy, concept_method: dict[str, str] | None = None,
                 concept_params: dict[str, dict] | None = None, coverage_horizon_ms: int = 86_400_000,
                 dedupe_predictions: int = 50_000, dedupe_labeled: int = 50_000,
                 retire_after_ms: int = 3_600_000, max_skew_ms: int = 3_600_000, idle_timeout_ms: int = 60_000,
                 partitions: list[int] | None = None, thresholds: ThresholdRule | None = None):
        self.profile_of = profile_of
        self.thresholds = thresholds or ThresholdRule(psi_threshold=policy.psi_threshold,
                                                      reset_below=policy.reset_below)
        self.spec = spec
        self.policy = policy
        self.concept_method = concept_method or {}
        self.concept_params = concept_params or {}
        self.coverage_horizon_ms = coverage_horizon_ms
        self.retire_after_ms = retire_after_ms
        self._versions: dict[Key, _VersionState | None] = {}
        self._profiles: dict[Key, ReferenceProfile | None] = {}  # the registry's answers: kept through a rollback
        self._last_seen: dict[Key, int] = {}  # (model, version) -> wall time (ms) of its latest record
        self._seen_predictions = RecentKeys(dedupe_predictions)
        self._seen_labeled = RecentKeys(dedupe_labeled)
        self.skipped = {"predictions": 0, "labeled": 0}  # records recognised as already counted
        self.max_skew_ms = max_skew_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.partitions = list(partitions or [])
        self._watermarks: dict[str, PartitionWatermarks] = {}  # model -> its watermark over the partitions

    def expect_partitions(self, partitions: list[int], now_ms: int) -> None:
        """The ``predictions`` partitions this detector reads (a rebalance may change them):
        each holds every model's watermark back until it delivers or is idle."""
        self.partitions = list(partitions)
        for wm in self._watermarks.values():
            wm.expect(self.partitions, now_ms)

    def _watermark_of(self, model: str, now_ms: int) -> PartitionWatermarks:
        wm = self._watermarks.get(model)
        if wm is None:
            wm = self._watermarks[model] = PartitionWatermarks(self.max_skew_ms, self.idle_timeout_ms)
            wm.expect(self.partitions, now_ms)
        return wm

    def _first_time(self, records: list[dict[str, Any]], seen: RecentKeys, keys_of, stream: str
                    ) -> tuple[list[dict[str, Any]], list[int], list]:
        """The champion records not counted before (nor earlier in this batch), their indices in
        ``records`` and their keys. They are remembered only by :meth:`_remember`, once the batch
        is handled: a batch that fails is not half-remembered."""
        roles = list(map(_ROLE, records))
        if roles.count("champion") == len(roles):
            index, champions = list(range(len(records))), records
        else:
            index = [i for i, role in enumerate(roles) if role == "champion"]
            champions = [records[i] for i in index]
        keys = keys_of(champions)
        if seen.isdisjoint(keys) and len(set(keys)) == len(keys):  # the usual case: all new
            return champions, index, keys
        fresh, fresh_index, fresh_keys, in_batch = [], [], [], set()
        for i, r, key in zip(index, champions, keys):
            if key in seen or key in in_batch:
                self.skipped[stream] += 1
                continue
            in_batch.add(key)
            fresh.append(r)
            fresh_index.append(i)
            fresh_keys.append(key)
        return fresh, fresh_index, fresh_keys

    def _remember(self, records: list[dict[str, Any]], keys: list, seen: RecentKeys, now_ms: int) -> None:
        seen.add_new(keys, now_ms)  # _first_time's keys: distinct, and none remembered yet
        for key in dict.fromkeys(zip(map(_MODEL, records), map(_VERSION, records))):
            self._last_seen[key] = now_ms

    def _state(self, key: Key) -> _VersionState | None:
        if key not in self._versions:
            if key not in self._profiles:  # a version's profile never changes: asked once per process
                self._profiles[key] = self.profile_of(*key)
                if self._profiles[key] is None:
                    log.warning("no reference profile for %s v%s: its data drift is not monitored", *key)
            profile = self._profiles[key]
            self._versions[key] = None if profile is None else self._new_state(key, profile)
        return self._versions[key]

    def _new_state(self, key: Key, profile: ReferenceProfile) -> _VersionState:
        size_ms = self.spec.size if self.spec.by == "time" else 60_000
        method = self.concept_method.get(key[0], "ADWIN")
        return _VersionState(
            WindowedProfileCounter(profile, self.spec),
            ConceptDriftDetector(method, **self.concept_params.get(key[0], {})),
            LabelCoverage(size_ms),
        )

    # -- predictions: data drift and coverage ---------------------------------------------

    def observe_predictions(self, predictions: list[dict[str, Any]], now_ms: int,
                            positions: list[Position] | None = None) -> DriftOutput:
        """Count champion predictions in their windows; write the windows the watermark closed.

        ``positions`` are the records' (partition, offset) on the ``predictions`` topic, in
        the same order (None: one partition). Every call also moves each model's
        watermark (a partition can turn idle between calls), so windows close even in a
        call without records.
        """
        out = DriftOutput()
        if positions is not None and len(positions) != len(predictions):
            raise ValueError("positions must have one (partition, offset) per record")
        predictions, index, keys = self._first_time(predictions, self._seen_predictions, _prediction_keys,
                                                    "predictions")
        partitions = (np.zeros(len(index), dtype=np.int64) if positions is None
                      else np.array([positions[i][0] for i in index], dtype=np.int64).reshape(len(index)))
        times = _times_ms(list(map(_EVENT_TIME, predictions)))
        closed: dict[Key, list] = defaultdict(list)
        for model, in_model in _groups(list(map(_MODEL, predictions))):
            wm = self._watermark_of(model, now_ms)
            before = wm.current(now_ms)  # the watermark in force while this batch arrived
            group_times = times if in_model is None else times[in_model]
            ahead = wm.observe(partitions if in_model is None else partitions[in_model], group_times, now_ms)
            if ahead.any():
                out.ahead_events[model] = int(ahead.sum())
            group = predictions if in_model is None else [predictions[i] for i in in_model.tolist()]
            for version, in_version in _groups(list(map(_VERSION, group))):
                state = self._state((model, version))
                if state is None:
                    continue
                rows = group if in_version is None else [group[i] for i in in_version.tolist()]
                version_times = group_times if in_version is None else group_times[in_version]
                late_before = state.counter.late_events
                state.coverage.add_predictions(version_times)
                closed[(model, version)] += state.counter.update(
                    columns_of(rows, state.counter.profile), version_times, watermark=before,
                    ahead=(ahead if in_version is None else ahead[in_version]) if self.spec.by == "time" else None)
                if state.counter.late_events > late_before:
                    out.late_events[model] = out.late_events.get(model, 0) + state.counter.late_events - late_before
        for key, state in self._versions.items():
            if state is None or key[0] not in self._watermarks:
                continue
            closed[key] += state.counter.advance(self._watermarks[key[0]].current(now_ms))
            out.metric_rows.extend(_event_count_rows(key, state.counter.take_event_counts(), now_ms))
        for key, windows in closed.items():
            state = self._versions[key]
            for window in windows:
                stats = window.stats(state.counter.profile, thresholds=self.thresholds)
                for signal in stats.to_signals():
                    out.metric_rows.append(metric_row(key, signal, now_ms))
                    if signal["statistic"] == "psi":
                        out.signals.append(_signal(key, signal, now_ms))
                decision = self.policy.observe_window(key[0], key[1], stats)
                if decision is not None:
                    out.requests.append(decision)
                out.metric_rows.extend(self._coverage_rows(key, state, now_ms))
                state.coverage.evict(before_ms=(stats.time_ms or 0) - self.coverage_horizon_ms)
        self._remember(predictions, keys, self._seen_predictions, now_ms)
        self._retire(out, now_ms)
        return out

    def _retire(self, out: DriftOutput, now_ms: int) -> None:
        """Free the state of versions superseded by a newer one and idle for ``retire_after_ms``,
        writing their open windows first (as partial windows: nothing they counted is lost)."""
        newest: dict[str, int] = {}
        for model, version in self._versions:
            newest[model] = max(newest.get(model, version), version)
        for key in [k for k in self._versions if k[1] < newest[k[0]]
                    and now_ms - self._last_seen.get(k, now_ms) >= self.retire_after_ms]:
            state = self._versions.pop(key)
            self._profiles.pop(key, None)
            self._last_seen.pop(key, None)
            self.policy.forget(*key)
            if state is None:
                continue
            for window in state.counter.flush():
                for signal in window.stats(state.counter.profile, thresholds=self.thresholds).to_signals():
                    out.metric_rows.append(metric_row(key, signal, now_ms))
            out.metric_rows.extend(_event_count_rows(key, state.counter.take_event_counts(), now_ms))
            out.metric_rows.extend(self._coverage_rows(key, state, now_ms))
            log.warning("%s v%s retired: no records for %d ms and a newer version is monitored", *key,
                        self.retire_after_ms)

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
                    rows.append(metric_row(key, {"kind": "coverage", "feature": "__labels__", "statistic": statistic,
                                           "value": float(value), "band": "", "window_start": window.start,
                                           "window_end": window.end, "n": window.n_predictions}, now_ms))
        return rows

    # -- joined labels: concept drift ------------------------------------------------------

    def observe_labeled(self, labeled: list[dict[str, Any]], now_ms: int,
                        positions: list[Position] | None = None) -> DriftOutput:
        """Feed joined labels' errors to the concept detector; a detection is a row and a
        signal at the event time, partition and offset of the record whose error fired it.
        ``positions``: the records' (partition, offset) on the ``labeled`` topic (None: unknown)."""
        out = DriftOutput()
        if positions is not None and len(positions) != len(labeled):
            raise ValueError("positions must have one (partition, offset) per record")
        labeled, batch_index, keys = self._first_time(labeled, self._seen_labeled, _labeled_keys, "labeled")
        versions = list(zip(map(_MODEL, labeled), map(_VERSION, labeled)))
        for key, in_key in _groups(versions):
            state = self._state(key)
            if state is None:
                continue
            group = labeled if in_key is None else [labeled[i] for i in in_key.tolist()]
            group_index = batch_index if in_key is None else [batch_index[i] for i in in_key.tolist()]
            times = _times_ms(list(map(_EVENT_TIME, group)))
            state.coverage.add_labels(times, _times_ms(list(map(_LABEL_TIME, group))))
            # Late labels raise the coverage of old windows: rewrite the rows of those they touched.
            touched = set((np.unique(times // state.coverage.size_ms) * state.coverage.size_ms).tolist())
            out.metric_rows.extend(self._coverage_rows(key, state, now_ms, touched))
            errors = np.array([r["error"] for r in group], dtype=np.float64)
            if state.detector.method in BINARY_METHODS and not np.all((errors == 0.0) | (errors == 1.0)):
                log.warning("%s v%s: errors are not 0/1 (a regression model?); %s needs 0/1 errors, using ADWIN",
                            key[0], key[1], state.detector.method)
                state.detector = ConceptDriftDetector("ADWIN")
            first = state.detector.n_seen
            for stream_index in state.detector.update(errors):
                at = int(times[stream_index - first])
                partition, offset = (None, None) if positions is None else positions[group_index[stream_index - first]]
                # The window is the instant of the record that fired; value keeps the stream index.
                signal = {"kind": "concept", "feature": "__error__", "statistic": state.detector.method,
                          "value": float(stream_index), "band": "act", "window_start": at, "window_end": at,
                          "n": state.detector.n_seen, "event_time": at, "partition": partition,
                          "offset": offset, "stream_index": int(stream_index)}
                out.metric_rows.append(metric_row(key, signal, now_ms))
                out.signals.append(_signal(key, signal, now_ms))
                decision = self.policy.observe_concept(key[0], key[1], state.detector.method, stream_index, at)
                if decision is not None:
                    out.requests.append(decision)
        self._remember(labeled, keys, self._seen_labeled, now_ms)
        return out

    # -- model events: the outcomes of retrain requests -------------------------------------

    def observe_model_events(self, events: list[dict[str, Any]]) -> list[OutcomeSeen]:
        """Feed the registry's ModelEvents (the ``models`` topic); those answering a retrain
        request (:func:`~driftline.services.drift_detector.retrain_loop.outcome_of`) reach the
        policy, at the latest event time it has seen for their model. A replayed event changes
        nothing (``applied`` False)."""
        seen = []
        for event in events:
            outcome = outcome_of(event)
            if outcome is None:
                continue
            model, request_id = event["model"], event["request_id"]
            applied = self.policy.observe_outcome(model, request_id, outcome, self.policy.event_time(model))
            if applied:
                log.warning("%s: retrain request %s %s (v%s); %s", model, request_id, outcome, event["version"],
                            "cooling down" if outcome == "promoted" else "its incident re-arms after a back-off")
            seen.append(OutcomeSeen(model, request_id, outcome, applied))
        return seen

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        versions = [
            {"model": m, "version": v, "counter": s.counter.snapshot(),
             "detector": base64.b64encode(s.detector.snapshot()).decode(), "coverage": s.coverage.snapshot()}
            for (m, v), s in self._versions.items() if s is not None
        ]
        rest = json.dumps({"format": 1, "policy": self.policy.snapshot(), "versions": versions,
                           "last_seen": [[m, v, t] for (m, v), t in self._last_seen.items()],
                           "watermarks": {m: wm.snapshot() for m, wm in self._watermarks.items()}})
        # The dedupe memories are the bulk (tens of thousands of keys): each encodes the chunks
        # it already encoded for the last snapshot only once (RecentKeys.snapshot_json).
        return b"".join([rest[:-1].encode(), b', "seen_predictions": ', *self._seen_predictions.snapshot_parts(),
                         b', "seen_labeled": ', *self._seen_labeled.snapshot_parts(), b"}"])

    def restore(self, snapshot: bytes, restart: bool = True) -> None:
        """Resume from :meth:`snapshot`: after a restart, or (``restart=False``) exactly as it was, the
        state of this process put back (a rollback): versions first seen since are forgotten too."""
        data = json.loads(snapshot)
        self._versions = {}
        self.policy.restore(data["policy"])
        for item in data["versions"]:
            key = (item["model"], item["version"])
            state = self._state(key)
            if state is None:
                continue
            state.counter.restore(item["counter"])
            state.detector.restore(base64.b64decode(item["detector"]))
            state.coverage.restore(item["coverage"])
        # Snapshots written before these keys existed restore without them.
        self._seen_predictions.restore(data.get("seen_predictions", []))
        self._seen_labeled.restore(data.get("seen_labeled", []))
        self._last_seen = {(m, v): t for m, v, t in data.get("last_seen", [])}
        self._watermarks = {}
        for model, saved in data.get("watermarks", {}).items():
            wm = self._watermarks[model] = PartitionWatermarks(self.max_skew_ms, self.idle_timeout_ms)
            wm.restore(saved, restart=restart)


# Fields read from every record, through map() (no Python frame per record).
_ROLE, _MODEL, _VERSION = itemgetter("role"), itemgetter("model"), itemgetter("model_version")
_EVENT_TIME, _LABEL_TIME, _SCORE = itemgetter("event_time"), itemgetter("label_time"), itemgetter("score")
_NUMERIC, _CATEGORICAL = itemgetter("numeric_features"), itemgetter("categorical_features")


def _prediction_keys(records: list[dict[str, Any]]) -> list[str]:
    return list(map(itemgetter("prediction_id"), records))


def _labeled_keys(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(zip(map(_MODEL, records), map(itemgetter("event_id"), records)))


def _times_ms(values: list) -> np.ndarray:
    """Epoch-ms event times as int64 (ints straight in; datetimes converted one by one)."""
    try:
        return np.array(values, dtype=np.int64).reshape(len(values))
    except TypeError:
        return np.fromiter((to_ms(v) for v in values), np.int64, len(values))


def _groups(labels: list) -> list[tuple[Any, np.ndarray | None]]:
    """``(label, indices)`` per distinct label in order of first appearance; indices None when
    every item has that one label (the usual case: one model, one version per batch)."""
    if not labels:
        return []
    first = labels[0]
    if labels.count(first) == len(labels):
        return [(first, None)]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    return [(label, np.asarray(ix, dtype=np.int64)) for label, ix in groups.items()]


def _event_count_rows(key: Key, counts, now_ms: int) -> list[dict[str, Any]]:
    """``late_events`` / ``ahead_events`` rows (kind data, feature ``__events__``) of windows
    whose counts moved: value and n are the window's cumulative count, rewritten as it grows."""
    rows = []
    for c in counts:
        for statistic, value in (("late_events", c.late_events), ("ahead_events", c.ahead_events)):
            if value:
                rows.append(metric_row(key, {"kind": "data", "feature": EVENTS, "statistic": statistic,
                                             "value": float(value), "band": "", "window_start": c.start,
                                             "window_end": c.end, "n": value}, now_ms))
    return rows


#: Every drift_metrics column a signal may leave out, with the value it then gets: Store.insert
#: takes the columns of a batch's first row, so every row must carry all of them.
METRIC_DEFAULTS: dict[str, Any] = {"threshold": None, "threshold_mode": "", "event_time": None, "partition": None,
                                   "offset": None, "stream_index": None}


def metric_row(key: Key, signal: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A ``drift_metrics`` row with every column (times as ms: ``computed_at``, ``event_time``)."""
    return {"model": key[0], "model_version": key[1], **METRIC_DEFAULTS, **signal, "computed_at": now_ms}


def _signal(key: Key, signal: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A ``DriftSignal`` record (times as ms)."""
    return {"model": key[0], "model_version": key[1], **METRIC_DEFAULTS, **signal, "detected_at": now_ms}

