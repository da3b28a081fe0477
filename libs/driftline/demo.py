"""``driftline demo``: the whole embedded pipeline on a synthetic credit scenario.

Trains and registers a first model, streams feature events through
ingest → predictor → label-joiner with labels arriving late (and a few early),
and reports what the store holds. Event ids are deterministic, so running the
demo again replays the same input: the documented queries still count each
event once.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.config import Settings
from driftline.embedded import Embedded
from driftline.models import DEFAULT_RECIPE, build_pipeline
from driftline.scenario import CATEGORICAL, CONTRACT, MODEL, NUMERIC, Batch, CreditScenario
from driftline.topics import FEATURES, LABELS

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event times are reproducible
EVENT_SPACING_MS = 10
TRAINING_OFFSET = 1_000_000_000  # training draws never share event indices with the stream

COUNT_PREDICTIONS = "SELECT count() FROM predictions FINAL WHERE role = 'champion'"
COUNT_JOINED = "SELECT count() FROM labels FINAL WHERE status = 'joined'"
EXAMPLE_QUERY = (
    "SELECT model_version, count() AS n, round(avg(error), 4) AS error_rate "
    "FROM labels FINAL WHERE status = 'joined' GROUP BY model_version ORDER BY model_version"
)


@dataclass(frozen=True)
class DemoPlan:
    events: int = 100_000
    chunk: int = 1000
    label_delay: int = 5_000  # a label arrives this many events after its prediction
    label_every: int = 10  # one event in ``label_every`` never gets a label (index % label_every == 3)
    early_every: int = 100  # one label in ``early_every`` arrives one chunk before its event


def event_id(i: int) -> str:
    return f"evt-{i:010d}"


def feature_events(batch: Batch) -> list[dict[str, Any]]:
    numeric_rows = np.column_stack([batch.numeric[n] for n in NUMERIC]).tolist()
    categorical_rows = np.column_stack([batch.categorical[c] for c in CATEGORICAL]).tolist()
    return [
        {
            "model": MODEL,
            "event_id": event_id(i),
            "entity_id": f"cust-{i % 50_000:06d}",
            "event_time": EPOCH_MS + i * EVENT_SPACING_MS,
            "numeric_features": dict(zip(NUMERIC, num)),
            "categorical_features": dict(zip(CATEGORICAL, cat)),
        }
        for i, num, cat in zip(batch.event_index.tolist(), numeric_rows, categorical_rows)
    ]


def train_first_model(app: Embedded, scenario: CreditScenario, rows: int = 20_000) -> int:
    """Train v1 on data drawn like the stream's start and make it champion; keep an existing champion."""
    import pandas as pd

    existing = app.registry.aliases(MODEL).get("champion")
    if existing is not None:
        return existing

    data = scenario.generate(TRAINING_OFFSET, rows)
    frame = pd.DataFrame({**data.numeric, **data.categorical})
    pipeline = build_pipeline(DEFAULT_RECIPE, CONTRACT).fit(frame, data.labels)
    lineage = {
        "source": "driftline.scenario.CreditScenario",
        "rows": rows,
        "data_sha256": hashlib.sha256(pd.util.hash_pandas_object(frame).values.tobytes()).hexdigest(),
        "event_indices": [TRAINING_OFFSET, TRAINING_OFFSET + rows],
    }
    version = app.registry.register(
        MODEL, pipeline, CONTRACT, actor="demo", reason="initial model", recipe=DEFAULT_RECIPE,
        params=DEFAULT_RECIPE["params"], lineage=lineage,
    )
    app.registry.set_alias(MODEL, "champion", version.version, actor="demo", reason="first champion")
    return version.version


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.started = total, stream, time.perf_counter()

    def update(self, done: int, extra: str = "") -> None:
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{self.total:,} events  {rate:>8,.0f} ev/s {extra}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def run_demo(settings: Settings, plan: DemoPlan, progress: bool = True) -> dict[str, Any]:
    scenario = CreditScenario()
    app = Embedded(settings)
    try:
        train_first_model(app, scenario)
        bar = Progress(plan.events) if progress else None
        labels_sent = 0
        started = time.perf_counter()
        for start in range(0, plan.events, plan.chunk):
            n = min(plan.chunk, plan.events - start)
            batch = scenario.generate(start, n)
            events = feature_events(batch)
            # Early labels: sent before their events exist.
            upcoming = scenario.generate(start + plan.chunk, min(plan.chunk, max(plan.events - start - plan.chunk, 0)))
            labels = _labels(upcoming, plan, early=True)
            app.ingest.submit(FEATURES, events)
            late_from = start - plan.label_delay
            if late_from >= 0:
                labels += _labels(scenario.generate(late_from, n), plan, early=False)
            app.ingest.submit(LABELS, labels)
            labels_sent += len(labels)
            app.pump()
            if bar:
                bar.update(start + n)
        # The stream ends; the labels still owed arrive.
        for start in range(max(plan.events - plan.label_delay, 0), plan.events, plan.chunk):
            labels = _labels(scenario.generate(start, min(plan.chunk, plan.events - start)), plan, early=False)
            app.ingest.submit(LABELS, labels)
            labels_sent += len(labels)
            app.pump()
        elapsed = time.perf_counter() - started
        if bar:
            bar.close()
        return {
            "events": plan.events,
            "predictions": int(app.store.scalar(COUNT_PREDICTIONS)),
            "labels_sent": labels_sent,
            "labels_joined": int(app.store.scalar(COUNT_JOINED)),
            "events_per_s": round(plan.events / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "champion_version": app.registry.aliases(MODEL).get("champion"),
            "home": str(settings.home),
        }
    finally:
        app.close()


def _labels(batch: Batch, plan: DemoPlan, early: bool) -> list[dict[str, Any]]:
    """Labels for ``batch``: the early ones if ``early``, otherwise the late ones."""
    out = []
    for i, label in zip(batch.event_index.tolist(), batch.labels.tolist()):
        if i % plan.label_every == 3:
            continue
        if (i % plan.early_every == 7) != early:
            continue
        out.append({"model": MODEL, "event_id": event_id(i), "label": label,
                    "label_time": EPOCH_MS + (i + plan.label_delay) * EVENT_SPACING_MS})
    return out
