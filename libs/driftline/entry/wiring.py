"""How each service is assembled from the shared parts, in either run mode.

Embedded mode and ``driftline serve`` both build services here, so the two
modes differ only in the bus, the store and the registry they are handed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from driftline.bus import Bus
from driftline.codec import Codec
from driftline.config import Settings
from driftline.failure import Backoff
from driftline.runner import Runner
from driftline.store import Store
from driftline.timeutil import now_ms

if TYPE_CHECKING:
    from driftline.services.drift_detector.service import DriftDetectorService
    from driftline.services.label_joiner.service import LabelJoinerService
    from driftline.services.predictor.service import PredictorService
    from driftline.services.retrainer.service import RetrainerService

# Each factory imports its service when called: a command that only names the
# services (`driftline --help`, `serve`'s choices) does not import scikit-learn and river.


@dataclass
class Context:
    settings: Settings
    bus: Bus
    codec: Codec
    store: Store
    registry: Any  # driftline.registry.Registry or RegistryClient: the same methods
    stop: threading.Event | None = None  # ends a runner's wait for a dependency (SIGTERM)


def predictor(ctx: Context) -> PredictorService:
    from driftline.services.predictor.service import PredictorService

    return PredictorService.from_registry(ctx.registry, retry_after_s=ctx.settings.model_load_retry_s)


def label_joiner(ctx: Context) -> LabelJoinerService:
    from driftline.services.label_joiner.service import LabelJoinerService

    s = ctx.settings
    return LabelJoinerService.over_store(ctx.store, s.label_ttl_ms, now_ms(), max_pending=s.label_max_pending,
                                         joined_capacity=s.label_joined_memory)


def drift_detector(ctx: Context) -> DriftDetectorService:
    from driftline.drift import AlertPolicy, WindowSpec
    from driftline.drift.calibration import ThresholdRule
    from driftline.services.drift_detector.logic import DriftDetector
    from driftline.services.drift_detector.service import DriftDetectorService, profile_from_registry

    s = ctx.settings
    spec = WindowSpec(kind=s.drift_window_kind, by=s.drift_window_by, size=s.drift_window_size,
                      step=s.drift_window_step,
                      # the default lateness (60 s) is about event time: count windows have none
                      allowed_lateness=s.drift_allowed_lateness_ms if s.drift_window_by == "time" else 0)
    policy = AlertPolicy(psi_threshold=s.drift_psi_threshold, consecutive_windows=s.drift_consecutive_windows,
                         reset_below=s.drift_reset_below, cooldown_ms=s.drift_cooldown_ms,
                         min_events=s.drift_min_events, rearm_after_ms=s.drift_rearm_after_ms)
    detector = DriftDetector(profile_from_registry(ctx.registry), spec, policy,
                             concept_method=s.concept_detectors, concept_params=s.concept_params,
                             dedupe_predictions=s.drift_dedupe_predictions, dedupe_labeled=s.drift_dedupe_labeled,
                             retire_after_ms=s.drift_retire_after_ms, max_skew_ms=s.drift_max_skew_ms,
                             idle_timeout_ms=s.drift_idle_timeout_ms,
                             thresholds=ThresholdRule(s.drift_threshold_mode, psi_threshold=s.drift_psi_threshold,
                                                      reset_below=s.drift_reset_below,
                                                      false_alarm_rate=s.drift_false_alarm_rate))
    return DriftDetectorService(detector)


def retrainer(ctx: Context) -> RetrainerService:
    from driftline.services.retrainer.floor import RowFloor
    from driftline.services.retrainer.logic import Retrainer
    from driftline.services.retrainer.service import RetrainerService

    s = ctx.settings
    logic = Retrainer(margin=s.retrain_margin, holdout_fraction=s.retrain_holdout_fraction, min_rows=s.retrain_min_rows,
                      metric=s.retrain_metric)
    floor = RowFloor(min_rows=s.retrain_min_rows, max_rows=s.retrain_max_rows,
                     holdout_fraction=s.retrain_holdout_fraction, champion_share=s.retrain_floor_share)
    return RetrainerService(logic, ctx.store, ctx.registry, max_rows=s.retrain_max_rows, wait_ms=s.retrain_wait_ms,
                            timeout_s=s.retrain_timeout_s, floor=floor)


#: Services a Runner drives (the HTTP ones, ingest and registry, are served by uvicorn).
RUNNER_SERVICES: dict[str, Callable[[Context], Any]] = {
    "predictor": predictor,
    "label-joiner": label_joiner,
    "drift-detector": drift_detector,
    "retrainer": retrainer,
}


def _linger_s(name: str, settings: Settings) -> float:
    """How long a runner's poll lingers for a fuller batch: a few ms for the predictor, whose
    callers wait for its answers; longer for the others, whose work is per batch (store inserts,
    windows) rather than on a caller's clock."""
    return (settings.predictor_linger_ms if name == "predictor" else settings.batch_linger_ms) / 1000


def make_runner(name: str, ctx: Context) -> Runner:
    service = RUNNER_SERVICES[name](ctx)
    state = None
    if hasattr(service, "snapshot"):
        from driftline.state import StateStore

        state = StateStore(ctx.store)
    s = ctx.settings
    runner = Runner(service, ctx.bus, ctx.codec, ctx.store, batch_size=s.batch_size,
                    poll_timeout_s=s.poll_timeout_s, linger_s=_linger_s(name, s), state=state, stop=ctx.stop,
                    overlap_acks=name == "predictor",  # its callers wait for answers, not for the broker's acks
                    backoff=Backoff(s.retry_backoff_initial_s, s.retry_backoff_max_s))
    if hasattr(service, "read_assignment_from"):  # the drift-detector's watermark covers every partition it reads
        service.read_assignment_from(runner.consumer.assigned)
    return runner
