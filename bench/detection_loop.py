"""The monitoring loop of one model over one synthetic stream, driven through driftline's own logic.

Events arrive at a fixed rate (``events_per_s``, event time = arrival time). The
serving champion scores each event; its Prediction record goes to the
drift-detector (:class:`~driftline.services.drift_detector.logic.DriftDetector`,
with the production :class:`~driftline.drift.policy.AlertPolicy` and window
settings of :class:`~driftline.config.Settings`), in consumer batches of
``batch`` records. The label of event ``i`` arrives ``label_delay`` events later,
as the LabeledPrediction record of the version that scored it. A retrain request
is served the way the retrainer service serves it: it waits until
``retrain_min_rows`` labelled rows from its window start have arrived (or gives
up after ``retrain_wait_ms``), takes the most recent ``retrain_max_rows`` of them,
and :class:`~driftline.services.retrainer.logic.Retrainer` trains a challenger and
gates it against the champion on the most recent share. A promoted challenger
serves from the next event on, as a new version with its own reference profile
(so its drift state starts clean). Training takes no stream time here.

Only the adapter touches driftline's drift-detector API: :func:`build_detector`,
:func:`observe` and :func:`error_detector`; change them when that API changes
(the retrain goes through :func:`_retrain`, the one caller of ``Retrainer``).
The new version's reference profile is the challenger's own (``Trained.profile``,
today's in-sample profile of the retrainer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.detection_streams import Stream
from driftline.config import Settings
from driftline.drift.detectors import ConceptDriftDetector
from driftline.drift.policy import AlertPolicy
from driftline.drift.profile import ReferenceProfile
from driftline.drift import WindowSpec
from driftline.models import monitored_score
from driftline.registry.core import LoadedModel, ModelVersion
from driftline.services.drift_detector.logic import DriftDetector
from driftline.services.retrainer.logic import LabelledData, Retrainer
from driftline.training import train

MODEL = "bench"
T0_MS = 1_700_000_000_000  # event time of the first live event


@dataclass(frozen=True)
class LoopConfig:
    """How the stream is played. Policy, windows and retrain sizes come from ``settings``
    (driftline's defaults unless given)."""

    label_delay: int = 500  # events between a prediction and the arrival of its label
    events_per_s: float = 10.0
    batch: int = 100  # records per observe call: a consumer batch
    settings: Settings = field(default_factory=Settings)

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.events_per_s


@dataclass(frozen=True)
class Request:
    """A retrain request as the bench sees it: where in the stream it left the detector."""

    at_event: int  # live-event index of the batch end at which the detector emitted it
    reason: str  # "concept_drift" or "data_drift"
    window_start_ms: int
    request_id: str = ""


@dataclass(frozen=True)
class RetrainOutcome:
    at_event: int  # when the challenger was judged (and would serve from the next event if promoted)
    request: Request
    promoted: bool
    rows: int
    reason: str


@dataclass
class LoopResult:
    """What happened on one stream with one concept detector."""

    stream: str
    method: str
    events: int
    change_start: int | None
    change_end: int | None
    requests: list[Request]
    retrains: list[RetrainOutcome]
    concept_detections: list[int]  # live-event index at which each concept detection left the detector
    accuracy_served: np.ndarray  # 1.0 where the model serving event i was right
    accuracy_first: np.ndarray  # 1.0 where the first model was right on event i (whether or not it served it)

    # -- measures -------------------------------------------------------------------------

    @property
    def false_alarms(self) -> int:
        """Retrain requests before the change starts (all of them on a stationary stream)."""
        limit = self.events if self.change_start is None else self.change_start
        return sum(r.at_event < limit for r in self.requests)

    @property
    def first_detection(self) -> Request | None:
        if self.change_start is None:
            return None
        return next((r for r in self.requests if r.at_event >= self.change_start), None)

    @property
    def delay(self) -> int | None:
        """Events from the start of the change to the first retrain request after it."""
        first = self.first_detection
        return None if first is None else first.at_event - self.change_start

    @property
    def missed(self) -> bool | None:
        return None if self.change_start is None else self.first_detection is None

    @property
    def requests_after_change(self) -> int:
        return 0 if self.change_start is None else sum(r.at_event >= self.change_start for r in self.requests)

    @property
    def detections_after_change(self) -> int:
        return 0 if self.change_start is None else sum(i >= self.change_start for i in self.concept_detections)

    @property
    def promotion(self) -> RetrainOutcome | None:
        """The first promoted retrain after the change started."""
        if self.change_start is None:
            return None
        return next((o for o in self.retrains if o.promoted and o.at_event >= self.change_start), None)

    def accuracy(self, start: int, stop: int, first_model: bool = False) -> float | None:
        """Accuracy on live events [start, stop) of the serving models, or of the first model."""
        start, stop = max(start, 0), min(stop, self.events)
        correct = self.accuracy_first if first_model else self.accuracy_served
        return float(correct[start:stop].mean()) if stop > start else None


# -- the adapter: the only code that knows driftline's drift-detector API ------------------------

def build_detector(method: str, profiles: dict[tuple[str, int], ReferenceProfile], settings: Settings) -> DriftDetector:
    """A drift-detector wired as :mod:`driftline.entry.wiring` wires it, with ``method`` on the error stream."""
    s = settings
    spec = WindowSpec(kind=s.drift_window_kind, by=s.drift_window_by, size=s.drift_window_size,
                      step=s.drift_window_step, allowed_lateness=s.drift_allowed_lateness_ms)
    policy = AlertPolicy(psi_threshold=s.drift_psi_threshold, consecutive_windows=s.drift_consecutive_windows,
                         reset_below=s.drift_reset_below, cooldown_ms=s.drift_cooldown_ms,
                         min_events=s.drift_min_events)
    return DriftDetector(lambda model, version: profiles.get((model, version)), spec, policy,
                         concept_method={MODEL: method}, concept_params=s.concept_params)


def error_detector(method: str, settings: Settings) -> ConceptDriftDetector:
    """The concept detector :func:`build_detector`'s drift-detector runs on the error stream."""
    return ConceptDriftDetector(method, **settings.concept_params.get(MODEL, {}))


def observe(detector: DriftDetector, predictions: list[dict], labeled: list[dict], now_ms: int
            ) -> tuple[list[tuple[str, int, str]], int]:
    """Feed one batch; return the retrain requests it produced as (reason, window_start ms,
    request id) and the number of concept detections."""
    requests, detections = [], 0
    for out in (detector.observe_predictions(predictions, now_ms), detector.observe_labeled(labeled, now_ms)):
        requests.extend((d.reason, d.window_start, d.request_id) for d in out.requests)
        detections += sum(s["kind"] == "concept" for s in out.signals)
    return requests, detections


def answer(detector: DriftDetector, request: Request, outcome: str, at_ms: int) -> None:
    """Tell the policy what became of a request, as the registry's model events tell the service."""
    detector.policy.observe_outcome(MODEL, request.request_id, outcome, at_ms)


# -- records ------------------------------------------------------------------------------------

@dataclass
class _Scored:
    """What the serving models said about every live event."""

    version: np.ndarray  # int
    predicted: np.ndarray  # class as str
    score: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Scored:
        return cls(np.zeros(n, np.int64), np.empty(n, dtype=object), np.zeros(n))

    def fill(self, start: int, version: int, estimator, frame: pd.DataFrame) -> None:
        probabilities = estimator.predict_proba(frame.iloc[start:])
        classes = np.array([str(c) for c in estimator.classes_], dtype=object)
        self.version[start:] = version
        self.predicted[start:] = classes[probabilities.argmax(axis=1)]
        self.score[start:] = monitored_score(probabilities)


def _prediction(i: int, scored: _Scored, features: list[dict], time_ms: int) -> dict:
    version = int(scored.version[i])
    return {"prediction_id": f"e{i}:{version}:champion", "event_id": f"e{i}", "entity_id": f"u{i % 997}",
            "model": MODEL, "model_version": version, "role": "champion", "score": float(scored.score[i]),
            "scores": {}, "predicted_label": scored.predicted[i], "numeric_features": features[i],
            "categorical_features": {}, "event_time": time_ms, "prediction_time": time_ms}


def _labeled(i: int, scored: _Scored, labels: np.ndarray, time_ms: int, label_time_ms: int) -> dict:
    version = int(scored.version[i])
    return {"prediction_id": f"e{i}:{version}:champion", "event_id": f"e{i}", "model": MODEL,
            "model_version": version, "role": "champion", "score": float(scored.score[i]),
            "predicted_label": scored.predicted[i], "label": labels[i], "value": None,
            "error": float(scored.predicted[i] != labels[i]), "event_time": time_ms, "prediction_time": time_ms,
            "label_time": label_time_ms}


# -- the loop -----------------------------------------------------------------------------------

def first_model(stream: Stream):
    """The champion v1, trained on the stream's training rows with driftline's training code."""
    return train(stream.recipe, stream.contract, stream.train, stream.train_labels)


def run_loop(stream: Stream, method: str, config: LoopConfig = LoopConfig(), champion=None) -> LoopResult:
    """Play ``stream`` through the drift-detector with ``method`` on the error stream, retraining as it asks.

    ``champion`` is the first model (:func:`first_model`); give it to share one training across detectors.
    """
    s = config.settings
    n, delay, step = len(stream.live), config.label_delay, config.batch
    times = T0_MS + np.round(np.arange(n + delay) * config.interval_ms).astype(np.int64)
    features = stream.live.to_dict("records")
    champion = champion or first_model(stream)
    version, estimator = 1, champion.estimator
    profiles = {(MODEL, 1): ReferenceProfile.from_dict(champion.profile)}
    scored = _Scored.empty(n)
    scored.fill(0, version, estimator, stream.live)
    first_correct = (scored.predicted == stream.live_labels).astype(np.float64)
    detector = build_detector(method, profiles, s)
    retrainer = Retrainer(margin=s.retrain_margin, holdout_fraction=s.retrain_holdout_fraction,
                          min_rows=s.retrain_min_rows, metric=s.retrain_metric)
    requests: list[Request] = []
    pending: list[Request] = []
    retrains: list[RetrainOutcome] = []
    detections: list[int] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        last = stop - 1
        predictions = [_prediction(i, scored, features, int(times[i])) for i in range(start, stop)]
        labeled = [_labeled(j, scored, stream.live_labels, int(times[j]), int(times[j + delay]))
                   for j in range(max(start - delay, 0), max(stop - delay, 0))]
        found, fired = observe(detector, predictions, labeled, int(times[last]))
        detections.extend([last] * fired)
        for reason, window_start, request_id in found:
            request = Request(last, reason, int(window_start), request_id)
            requests.append(request)
            pending.append(request)
        # The retrainer: the oldest request first, once its data is there.
        while pending:
            request = pending[0]
            labelled_until = last - delay  # newest event whose label has arrived
            first = int(np.searchsorted(times[:n], request.window_start_ms, side="left"))
            rows = labelled_until - first + 1
            if not retrainer.enough(rows):
                if times[last] - times[request.at_event] >= s.retrain_wait_ms:
                    pending.pop(0)
                    retrains.append(RetrainOutcome(last, request, False, max(rows, 0), "given up: too few labels"))
                    answer(detector, request, "skipped", int(times[last]))
                    continue
                break
            pending.pop(0)
            lo = max(first, labelled_until + 1 - s.retrain_max_rows)
            outcome, challenger = _retrain(retrainer, stream, version, estimator, champion, lo, labelled_until + 1,
                                           times, last, request)
            retrains.append(outcome)
            answer(detector, request, "promoted" if outcome.promoted else
                   "failed" if outcome.reason.startswith("failed") else "rejected", int(times[last]))
            if outcome.promoted and last + 1 < n:
                version, estimator, champion = version + 1, challenger.estimator, challenger
                profiles[(MODEL, version)] = ReferenceProfile.from_dict(challenger.profile)
                scored.fill(last + 1, version, estimator, stream.live)
    correct = (scored.predicted == stream.live_labels).astype(np.float64)
    return LoopResult(stream.name, method, n, stream.change_start, stream.change_end, requests, retrains, detections,
                      correct, first_correct)


def _retrain(retrainer: Retrainer, stream: Stream, version: int, estimator, champion, lo: int, hi: int,
             times: np.ndarray, last: int, request: Request):
    """Retrainer.evaluate on live events [lo, hi): (outcome, challenger)."""
    meta = ModelVersion(MODEL, version, "bench", 0, "bench", stream.contract, recipe=stream.recipe)
    data = LabelledData(stream.live.iloc[lo:hi].reset_index(drop=True), stream.live_labels[lo:hi],
                        times[lo:hi], sql="bench")
    try:
        verdict = retrainer.evaluate(data, LoadedModel(meta, estimator))
    except ValueError as exc:  # e.g. one class only: the retrainer service records it as failed
        return RetrainOutcome(last, request, False, hi - lo, f"failed: {exc}"), None
    return RetrainOutcome(last, request, verdict.promote, hi - lo, verdict.reason), verdict.challenger


@dataclass(frozen=True)
class StationaryCount:
    """Concept detections on a stationary error stream; ``per_1e6`` extrapolates when the
    detector was too slow to see all ``wanted`` errors within its time budget."""

    method: str
    wanted: int
    measured: int
    detections: int
    seconds: float
    error_rate: float

    @property
    def per_1e6(self) -> float:
        return self.detections * 1_000_000 / self.measured

    @property
    def scaled(self) -> bool:
        return self.measured < self.wanted


def stationary_errors(stream: Stream, champion) -> np.ndarray:
    """The 0/1 errors of ``champion`` on a stream's live events, in stream order."""
    scored = _Scored.empty(len(stream.live))
    scored.fill(0, 1, champion.estimator, stream.live)
    return (scored.predicted != stream.live_labels).astype(np.float64)


def stationary_detections(errors: np.ndarray, methods: list[str], config: LoopConfig = LoopConfig(),
                          budget_s: float = 60.0, chunk: int = 10_000) -> list[StationaryCount]:
    """Concept detections of each method on a stationary error stream: each would be a retrain
    request unless the policy holds it back (incident, cooldown).

    The errors go straight into the detector the drift-detector would build
    (:func:`error_detector`), not through Prediction / LabeledPrediction records: at 10^6
    errors per detector the records would cost minutes and change nothing the detector sees
    (:func:`drift_detector_detections` does it the long way; a unit test checks both agree).
    A detector stops early (and says so in ``measured``) once it has spent ``budget_s``.
    """
    import time

    counts = []
    for method in methods:
        detector = error_detector(method, config.settings)
        detections = measured = 0
        began = time.perf_counter()
        # at least one chunk, so that every detector has a rate
        while measured < errors.size and (measured == 0 or time.perf_counter() - began < budget_s):
            stop = min(measured + chunk, errors.size)
            detections += len(detector.update(errors[measured:stop]))
            measured = stop
        counts.append(StationaryCount(method, int(errors.size), measured, detections, time.perf_counter() - began,
                                      float(errors[:measured].mean())))
    return counts


def drift_detector_detections(errors: np.ndarray, method: str, profile: ReferenceProfile,
                              config: LoopConfig = LoopConfig(), chunk: int = 1000) -> int:
    """Concept detections when ``errors`` arrive as LabeledPrediction records through the drift-detector."""
    n = errors.size
    delay_ms = int(config.label_delay * config.interval_ms)
    times = T0_MS + np.round(np.arange(n) * config.interval_ms).astype(np.int64)
    scored = _Scored(np.ones(n, np.int64), np.where(errors == 1.0, "1", "0").astype(object), np.zeros(n))
    labels = np.full(n, "0", dtype=object)
    detector = build_detector(method, {(MODEL, 1): profile}, config.settings)
    detections = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        labeled = [_labeled(j, scored, labels, int(times[j]), int(times[j]) + delay_ms) for j in range(start, stop)]
        detections += observe(detector, [], labeled, int(times[stop - 1]) + delay_ms)[1]
    return detections
