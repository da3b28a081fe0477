"""``driftline demo``: the whole embedded pipeline on a synthetic credit scenario.

Trains and registers a first model, streams feature events through
ingest → predictor → label-joiner with labels arriving late (and a few early),
and reports what the store holds. Event ids are deterministic, so running the
demo again replays the same input: the documented queries still count each
event once.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline import __version__
from driftline.bus import next_offsets
from driftline.config import Settings
from driftline.entry.embedded import Embedded
from driftline.heap import settle_heap
from driftline.models import DEFAULT_RECIPE
from driftline.entry.scenario import CATEGORICAL, CONTRACT, MODEL, NUMERIC, Batch, CreditScenario
from driftline.timeutil import to_datetime
from driftline.topics import DRIFT, FEATURES, LABELED, LABELS, MODELS, RETRAIN
from driftline.training import classification_metrics, train

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event times are reproducible
EVENT_SPACING_MS = 10
TRAINING_OFFSET = 1_000_000_000  # training draws never share event indices with the stream

COUNT_PREDICTIONS = "SELECT count() FROM predictions FINAL WHERE role = 'champion'"
COUNT_JOINED = "SELECT count() FROM labels FINAL WHERE status = 'joined'"
EXAMPLE_QUERY = (
    "SELECT model_version, count() AS n, round(avg(error), 4) AS error_rate "
    "FROM labels FINAL WHERE status = 'joined' GROUP BY model_version ORDER BY model_version"
)


WINDOW_MS = 50_000  # drift windows of 5,000 events at EVENT_SPACING_MS

#: Settings the demo runs with: windows sized to the scenario, a cooldown longer than
#: the stream, and retraining as soon as 3,000 labels arrived after the drift (the
#: champion-size floor is off: v1 trained on 20,000 rows, more labels than a short demo has).
DEMO_SETTINGS = {
    "drift_window_kind": "tumbling",
    "drift_window_by": "time",
    "drift_window_size": WINDOW_MS,
    "drift_allowed_lateness_ms": 20_000,
    "drift_cooldown_ms": 3_600_000,
    "retrain_min_rows": 3000,
    "retrain_floor_share": 0.0,
}


@dataclass(frozen=True)
class DemoPlan:
    events: int = 200_000
    chunk: int = 1000
    label_delay: int = 5_000  # a label arrives this many events after its prediction
    label_every: int = 10  # one event in ``label_every`` never gets a label (index % label_every == 3)
    early_every: int = 100  # one label in ``early_every`` arrives one chunk before its event
    drift_at: int | None = None  # event index of the covariate shift and concept change; None: half-way
    drift: bool = True
    covariate_shift: bool = True
    concept_change: bool = True

    @property
    def onset(self) -> int | None:
        """Where drift starts: half-way by default, on a window boundary."""
        if not self.drift:
            return None
        at = self.events // 2 if self.drift_at is None else self.drift_at
        per_window = WINDOW_MS // EVENT_SPACING_MS
        return at // per_window * per_window

    def scenario(self) -> CreditScenario:
        return CreditScenario(covariate_shift_at=self.onset if self.covariate_shift else None,
                              concept_change_at=self.onset if self.concept_change else None)


def event_id(i: int) -> str:
    return f"evt-{i:010d}"


#: Feature maps are built in key order, the order ingest keeps them in (any order is accepted;
#: this one spares ingest a reordering per event).
_NUMERIC_IN_KEY_ORDER = tuple(sorted(NUMERIC))
_CATEGORICAL_IN_KEY_ORDER = tuple(sorted(CATEGORICAL))


def feature_events(batch: Batch) -> list[dict[str, Any]]:
    indexes = batch.event_index.tolist()
    numeric_rows = np.column_stack([batch.numeric[n] for n in _NUMERIC_IN_KEY_ORDER]).tolist()
    categorical_rows = zip(*(batch.categorical[c].tolist() for c in _CATEGORICAL_IN_KEY_ORDER))
    numeric_names, categorical_names = _NUMERIC_IN_KEY_ORDER, _CATEGORICAL_IN_KEY_ORDER
    return [
        {
            "model": MODEL,
            "event_id": event_id(i),
            "entity_id": f"cust-{i % 50_000:06d}",
            "event_time": EPOCH_MS + i * EVENT_SPACING_MS,
            "numeric_features": dict(zip(numeric_names, num)),
            "categorical_features": dict(zip(categorical_names, cat)),
        }
        for i, num, cat in zip(indexes, numeric_rows, categorical_rows)
    ]


def train_first_model(app: Embedded, scenario: CreditScenario, rows: int = 20_000) -> int:
    """Train v1 on data drawn like the stream's start and make it champion; keep an existing champion."""
    existing = app.registry.aliases(MODEL).get("champion")
    if existing is not None:
        return existing
    data = scenario.generate(TRAINING_OFFSET, rows)
    frame = pd.DataFrame({**data.numeric, **data.categorical})
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, data.labels)
    lineage = {"source": "driftline.entry.scenario.CreditScenario", "rows": rows, "data_sha256": trained.data_sha256,
               "event_indices": [TRAINING_OFFSET, TRAINING_OFFSET + rows], "code_version": f"driftline {__version__}"}
    version = app.registry.register(
        MODEL, trained.estimator, CONTRACT, actor="demo", reason="initial model", recipe=DEFAULT_RECIPE,
        params=DEFAULT_RECIPE["params"], metrics=classification_metrics(trained.estimator, frame, data.labels),
        lineage=lineage, profile=trained.profile,
    )
    app.registry.set_alias(MODEL, "champion", version.version, actor="demo", reason="first champion")
    return version.version


class Monitor:
    """Reads the pipeline's own topics, as any consumer could, for live progress and the timeline."""

    #: Labeled records kept undecoded until the rolling accuracy is read; past this many, the
    #: newest are decoded (a few thousand bytes each at most, so memory stays flat on long runs).
    PENDING_LABELED = 20_000

    def __init__(self, app: Embedded):
        self.codec = app.codec
        self.consumer = app.bus.consumer("demo-monitor", [LABELED, DRIFT, RETRAIN, MODELS])
        self.errors: deque[float] = deque(maxlen=2000)
        self._labeled: list[bytes] = []  # labeled records not decoded yet
        self.worst_psi = 0.0
        self._latest_window: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.streamed = 0  # events ingested so far, set by the demo loop
        self.promotions: list[dict[str, Any]] = []

    def poll(self) -> None:
        while batch := self.consumer.poll_batch(5000, 0.0):
            for m in batch:
                if m.topic == LABELED:
                    # Decoded only when the rolling accuracy is read (see ``rolling_accuracy``).
                    self._labeled.append(m.value)
                    continue
                record = self.codec.decode(m.topic, m.value)
                if m.topic == DRIFT and record["statistic"] == "psi":
                    # The worst feature of the newest window.
                    newer = record["window_start"] != self._latest_window
                    self.worst_psi = record["value"] if newer else max(self.worst_psi, record["value"])
                    self._latest_window = record["window_start"]
                elif m.topic == RETRAIN:
                    self.requests.append({**record, "seen_at": time.perf_counter(), "streamed": self.streamed})
                elif m.topic == MODELS and record["action"] == "alias_moved" and record["alias"] == "champion":
                    self.promotions.append({**record, "seen_at": time.perf_counter()})
            self.consumer.commit(next_offsets(batch))
            if len(self._labeled) > self.PENDING_LABELED:
                self._decode_labeled()

    @property
    def rolling_accuracy(self) -> float | None:
        """1 - the mean error of the newest ``errors.maxlen`` champion predictions labeled."""
        self._decode_labeled()
        return 1 - sum(self.errors) / len(self.errors) if self.errors else None

    def _decode_labeled(self) -> None:
        """The labeled records polled since the last read, newest first until the window is full:
        older ones would only be pushed out of ``errors`` again."""
        newest: list[float] = []
        while self._labeled and len(newest) < self.errors.maxlen:
            record = self.codec.decode(LABELED, self._labeled.pop())
            if record["role"] == "champion":
                newest.append(record["error"])
        self._labeled.clear()
        self.errors.extend(reversed(newest))


class Progress:
    """A one-line progress bar on stderr."""

    #: Seconds between redraws: the line is read by a person, and each redraw reads the rolling accuracy.
    REDRAW_S = 0.5

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.started = total, stream, time.perf_counter()
        self._drawn_at: float | None = None

    def update(self, done: int, monitor: Monitor, champion_of: Callable[[], int | None]) -> None:
        now = time.perf_counter()
        if done < self.total and self._drawn_at is not None and now - self._drawn_at < self.REDRAW_S:
            return
        self._drawn_at = now
        champion = champion_of()
        width = 24
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        accuracy = monitor.rolling_accuracy
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:>7,}/{self.total:,} events {rate:>6,.0f} ev/s  "
            f"accuracy {'  -  ' if accuracy is None else f'{accuracy:.3f}'}  worst PSI {monitor.worst_psi:5.2f}  "
            f"champion v{champion}  ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def run_demo(settings: Settings, plan: DemoPlan, progress: bool = True, report_path: Path | None = None) -> dict[str, Any]:
    scenario = plan.scenario()
    settings = settings.model_copy(update=DEMO_SETTINGS)
    app = Embedded(settings)
    try:
        first_version = train_first_model(app, CreditScenario(seed=scenario.seed))  # trained before any drift
        settle_heap()  # the first model and what training loaded live as long as the demo
        monitor = Monitor(app)
        bar = Progress(plan.events) if progress else None
        labels_sent = 0
        drift_seen_at = None
        draws = _Draws(scenario)
        started = time.perf_counter()
        for start in range(0, plan.events, plan.chunk):
            n = min(plan.chunk, plan.events - start)
            if drift_seen_at is None and plan.onset is not None and start + n > plan.onset:
                drift_seen_at = time.perf_counter()
            # Early labels: sent before their events exist.
            upcoming = draws(start + plan.chunk, min(plan.chunk, max(plan.events - start - plan.chunk, 0)))
            labels = _labels(upcoming, plan, early=True)
            app.ingest.submit(FEATURES, feature_events(draws(start, n)))
            late_from = start - plan.label_delay
            if late_from >= 0:
                labels += _labels(draws(late_from, n), plan, early=False)
            draws.forget_before(late_from + plan.chunk)
            app.ingest.submit(LABELS, labels)
            labels_sent += len(labels)
            app.pump()
            monitor.streamed = start + n
            monitor.poll()
            if bar:
                bar.update(start + n, monitor, lambda: app.registry.aliases(MODEL).get("champion"))
        # The stream ends; the labels still owed arrive.
        for start in range(max(plan.events - plan.label_delay, 0), plan.events, plan.chunk):
            labels = _labels(draws(start, min(plan.chunk, plan.events - start)), plan, early=False)
            app.ingest.submit(LABELS, labels)
            labels_sent += len(labels)
            app.pump()
        elapsed = time.perf_counter() - started
        for runner in app.runners:
            runner.persist_state()
        monitor.poll()
        if bar:
            bar.close()
        summary = {
            "events": plan.events,
            "predictions": int(app.store.scalar(COUNT_PREDICTIONS)),
            "labels_sent": labels_sent,
            "labels_joined": int(app.store.scalar(COUNT_JOINED)),
            "events_per_s": round(plan.events / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "drift_onset_event": plan.onset,
            **_story(app, plan, first_version, monitor, drift_seen_at),
            "home": str(settings.home),
        }
        if report_path is not None:
            from driftline.entry.report import write_report

            summary["report"] = str(write_report(app.store, app.registry, report_path, MODEL))
        return summary
    finally:
        app.close()


def reset_home(home: Path) -> None:
    """Empty ``home`` so the demo's story starts from nothing, but only if it holds nothing
    except driftline's own state (a store and a registry); anything else stays untouched."""
    if not home.exists():
        return
    entries = {p.name for p in home.iterdir()}
    foreign = sorted(entries - {"store", "registry", "bus"})
    if foreign:
        raise SystemExit(f"{home} holds {foreign}, not only driftline state: not resetting it. "
                         "Use another DRIFTLINE_HOME, or --keep to replay onto it.")
    for name in entries:
        shutil.rmtree(home / name)


def _event_time(index: int) -> datetime:
    return to_datetime(EPOCH_MS + index * EVENT_SPACING_MS)


def _accuracy(app: Embedded, where: str, parameters: dict[str, Any]) -> float | None:
    value = app.store.scalar(
        f"SELECT if(count() = 0, nan, 1 - avg(error)) FROM labels FINAL WHERE status = 'joined' AND {where}", parameters)
    return None if value != value else round(float(value), 4)


def _story(app: Embedded, plan: DemoPlan, first_version: int, monitor: Monitor, drift_seen_at: float | None) -> dict:
    champion = app.registry.aliases(MODEL).get("champion")
    promoted = [p for p in monitor.promotions if p["version"] != first_version]
    story: dict[str, Any] = {"champion_version": champion}
    if plan.onset is None:
        story["accuracy_pre_drift"] = _accuracy(app, "model_version = {v:UInt32}", {"v": first_version})
        return story
    onset = _event_time(plan.onset)
    story["accuracy_pre_drift"] = _accuracy(app, "model_version = {v:UInt32} AND event_time < {t:DateTime64(3)}",
                                            {"v": first_version, "t": onset})
    story["accuracy_during_drift"] = _accuracy(app, "model_version = {v:UInt32} AND event_time >= {t:DateTime64(3)}",
                                               {"v": first_version, "t": onset})
    story["accuracy_after_retrain"] = (
        _accuracy(app, "model_version = {v:UInt32}", {"v": promoted[0]["version"]}) if promoted else None)
    request = monitor.requests[0] if monitor.requests else None
    # Events the stream had carried past the onset when the first retrain request appeared.
    story["detection_delay_events"] = None if request is None else request["streamed"] - plan.onset
    story["drift_onset_to_promotion_s"] = (
        round(promoted[0]["seen_at"] - drift_seen_at, 2) if promoted and drift_seen_at is not None else None)
    story["retrain_requests"] = len(monitor.requests)
    return story


class _Draws:
    """``scenario.generate(start, n)``, drawn once: each chunk's events are needed up to three
    times (early labels, events, late labels). Draws before :meth:`forget_before` are dropped."""

    def __init__(self, scenario: CreditScenario):
        self.scenario = scenario
        self._kept: dict[tuple[int, int], Batch] = {}

    def __call__(self, start: int, n: int) -> Batch:
        batch = self._kept.get((start, n))
        if batch is None:
            batch = self._kept[(start, n)] = self.scenario.generate(start, n)
        return batch

    def forget_before(self, start: int) -> None:
        for key in [key for key in self._kept if key[0] < start]:
            del self._kept[key]


def _labels(batch: Batch, plan: DemoPlan, early: bool) -> list[dict[str, Any]]:
    """Labels for ``batch``: the early ones if ``early``, otherwise the late ones."""
    index = batch.event_index
    # One event in label_every never gets a label; one label in early_every comes early.
    chosen = (index % plan.label_every != 3) & ((index % plan.early_every == 7) == early)
    first_label_time = EPOCH_MS + plan.label_delay * EVENT_SPACING_MS
    return [{"model": MODEL, "event_id": event_id(i), "label": label,
             "label_time": first_label_time + i * EVENT_SPACING_MS}
            for i, label in zip(index[chosen].tolist(), batch.labels[chosen].tolist())]
