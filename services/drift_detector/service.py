"""The drift-detector as a runnable service: predictions and joined labels in; drift
metrics, drift signals and retrain requests out. Its state is checkpointed (step 4).

It also reads the ``models`` topic as a control topic (every replica reads all of it,
before each batch): the outcomes of its retrain requests re-arm or cool down its alert
policy, and every model event is mirrored into the ``audit`` table. Each request it makes
is written to ``retrain_requests`` as a ``requested`` row (see
:mod:`driftline.services.drift_detector.retrain_loop`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from driftline import telemetry
from driftline.drift import ReferenceProfile
from driftline.registry import RegistryError
from driftline.runner import Incoming, Output
from driftline.timeutil import to_datetime
from driftline.topics import DRIFT, LABELED, MODELS, PREDICTIONS, RETRAIN
from driftline.services.drift_detector.logic import DriftDetector, DriftOutput
from driftline.services.drift_detector.retrain_loop import audit_row, requested_row


LATE_EVENTS = Counter(
    "driftline_drift_late_events", "Predictions that reached the drift-detector after their window had closed "
    "(counted in drift_metrics as statistic 'late_events', never in a window's PSI), by model.", ["model"])
AHEAD_EVENTS = Counter(
    "driftline_drift_ahead_events", "Predictions far ahead of the event-time watermark (beyond "
    "DRIFTLINE_DRIFT_MAX_SKEW_MS): counted in their own window without moving the watermark, by model.", ["model"])
ALREADY_COUNTED = Counter(
    "driftline_drift_already_counted", "Records the drift-detector skipped because it had counted them already "
    "(a republished batch of predictions, a replayed `labeled` record), by topic.", ["topic"])
RETRAIN_OUTCOMES = Counter(
    "driftline_drift_retrain_outcomes", "Outcomes of retrain requests the drift-detector's policy acted on "
    "(promoted: cooldown; rejected, failed, skipped: the incident re-arms), by model and outcome.",
    ["model", "outcome"])


def profile_from_registry(registry: Any):
    """``(model, version) -> ReferenceProfile`` read from the version's registry entry."""

    def profile_of(model: str, version: int) -> ReferenceProfile | None:
        try:
            profile = registry.get(model, version).profile
        except RegistryError:  # predictions of a version this registry never had: not ours to judge
            return None
        return ReferenceProfile.from_dict(profile) if profile else None

    return profile_of


class DriftDetectorService:
    name = "drift-detector"
    topics = [PREDICTIONS, LABELED]
    control_topics = [MODELS]

    def __init__(self, detector: DriftDetector):
        self.detector = detector
        self._newest_coverage: dict[str, int] = {}  # model -> start of the newest coverage window (metrics)
        self._assigned: Callable[[], set[tuple[str, int]] | None] | None = None
        self._partitions_read: set[int] = set()

    def read_assignment_from(self, assigned: Callable[[], set[tuple[str, int]] | None]) -> None:
        """Where to ask which (topic, partition)s this instance reads (its consumer's ``assigned``):
        every ``predictions`` partition assigned holds the watermark until it delivers or is idle,
        so the first partition to deliver never closes windows for the others."""
        self._assigned = assigned

    def on_assignment(self, now_ms: int) -> None:
        """The runner's hook after a rebalance."""
        self._follow_partitions(now_ms)

    def _follow_partitions(self, now_ms: int) -> None:
        assigned = self._assigned() if self._assigned is not None else None
        partitions = {p for t, p in assigned or () if t == PREDICTIONS}
        if partitions and partitions != self._partitions_read:
            self.detector.expect_partitions(sorted(partitions), now_ms)
            self._partitions_read = partitions

    def handle(self, batch: list[Incoming], now_ms: int) -> Output:
        out = Output()
        self._follow_partitions(now_ms)
        # Model events come first in a batch (the runner puts control records first): an outcome
        # applies before this batch's windows are judged.
        model_events, predictions, prediction_positions, labeled, labeled_positions = [], [], [], [], []
        # One pass: records by topic, with their (partition, offset): the watermark is kept per
        # partition, and a concept detection names the record that fired it.
        for item in batch:
            if item.topic == PREDICTIONS:
                predictions.append(item.record)
                prediction_positions.append((item.message.partition, item.message.offset))
            elif item.topic == LABELED:
                labeled.append(item.record)
                labeled_positions.append((item.message.partition, item.message.offset))
            elif item.topic == MODELS:
                model_events.append(item.record)
        out.add_rows("audit", [audit_row(event) for event in model_events])
        for seen in self.detector.observe_model_events(model_events):
            if seen.applied:
                RETRAIN_OUTCOMES.labels(seen.model, seen.outcome).inc()
        skipped_before = dict(self.detector.skipped)
        for result in (self.detector.observe_predictions(predictions, now_ms, prediction_positions),
                       self.detector.observe_labeled(labeled, now_ms, labeled_positions)):
            self._emit(result, out, now_ms)
            for model, n in result.late_events.items():
                LATE_EVENTS.labels(model).inc(n)
            for model, n in result.ahead_events.items():
                AHEAD_EVENTS.labels(model).inc(n)
            telemetry.observe_drift(result.metric_rows, result.signals, result.requests, self._newest_coverage)
        for stream, topic in (("predictions", PREDICTIONS), ("labeled", LABELED)):
            ALREADY_COUNTED.labels(topic).inc(self.detector.skipped[stream] - skipped_before[stream])
        return out

    @staticmethod
    def _emit(result: DriftOutput, out: Output, now_ms: int) -> None:
        out.add_rows("drift_metrics", [{**row, "computed_at": to_datetime(row["computed_at"]),
                                        "event_time": None if row["event_time"] is None else to_datetime(row["event_time"])}
                                       for row in result.metric_rows])
        for signal in result.signals:
            out.publish(DRIFT, signal["model"], signal)
        for decision in result.requests:
            out.publish(RETRAIN, decision.model, decision.to_dict())
        out.add_rows("retrain_requests", [requested_row(decision, now_ms) for decision in result.requests])

    def snapshot(self) -> bytes:
        return self.detector.snapshot()

    def restore(self, snapshot: bytes) -> None:
        self.detector.restore(snapshot)

    def rollback_to(self, snapshot: bytes) -> None:
        """Put the state back exactly as it was at :meth:`snapshot` (a
        :class:`~driftline.runner.RollbackPoint`), not as after a restart."""
        self.detector.restore(snapshot, restart=False)
