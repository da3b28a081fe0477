"""A wind-turbine gearbox stream with known change points, driven through the embedded pipeline.

Not the demo's credit data: a gearbox ``fault`` / ``ok`` classifier over oil
temperature, vibration, load and site. The stream is a list of
:class:`Phase`\\ s; a phase can flip its labels (a labelling glitch: the concept
detector fires, and a challenger trained on it is rightly rejected), move the
oil temperature (a covariate shift) and turn the concept around (what makes a
fault after the change).

:class:`GearboxRun` feeds events and, ``label_delay`` events later, their
labels straight onto the ``features`` and ``labels`` topics (Avro, as a
producer of the user's may), pumping the embedded pipeline after every chunk,
and records every retrain request and model event seen on the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftline.bus import next_offsets
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import default_recipe
from driftline.topics import FEATURES, LABELS, MODELS, RETRAIN
from driftline.training import classification_metrics, reference_profile, train

MODEL = "gearbox"
NUMERIC = ("oil_temp_c", "vibration_mm_s", "load_fraction")
CATEGORICAL = ("site",)
CONTRACT = FeatureContract(numeric=NUMERIC, categorical=CATEGORICAL, classes=("fault", "ok"))
SITES = np.array(["dunes", "ridge", "bay"], dtype=object)
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPACING_MS = 100  # one event every 100 ms of event time: 36,000 events per hour
WINDOW_MS = 120_000  # drift windows of 1,200 events


@dataclass(frozen=True)
class Phase:
    """``events`` events of one regime."""

    events: int
    flipped: bool = False  # labels say the opposite of the truth (a labelling glitch)
    hot: bool = False  # oil runs 15 degrees hotter (covariate shift) and faults follow load, not heat (concept change)


def gearbox(n: int, rng: np.random.Generator, *, hot: bool = False, flipped: bool = False) -> pd.DataFrame:
    """``n`` readings and their labels."""
    offset = 15.0 if hot else 0.0
    frame = pd.DataFrame({
        "oil_temp_c": rng.normal(70, 6, n) + offset,
        "vibration_mm_s": rng.gamma(2.0, 1.5, n),
        "load_fraction": rng.uniform(0.2, 1.0, n),
        "site": rng.choice(SITES, n),
    })
    if hot:  # after the change heat no longer tells faults apart; load and vibration do
        z = 6.0 * (frame["load_fraction"] - 0.6) + 0.8 * (frame["vibration_mm_s"] - 3.0)
    else:
        z = 0.4 * (frame["oil_temp_c"] - 70) + 0.8 * (frame["vibration_mm_s"] - 3.0)
    fault = rng.random(n) < 1 / (1 + np.exp(-3.0 * z))
    if flipped:
        fault = ~fault
    frame["status"] = np.where(fault, "fault", "ok")
    return frame


def stream(phases: list[Phase], seed: int = 5) -> pd.DataFrame:
    """The phases one after another, with event ids and event times."""
    rng = np.random.default_rng(seed)
    frame = pd.concat([gearbox(p.events, rng, hot=p.hot, flipped=p.flipped) for p in phases], ignore_index=True)
    frame.insert(0, "event_time", EPOCH_MS + np.arange(len(frame)) * SPACING_MS)
    frame.insert(0, "event_id", [f"gbx-{i:08d}" for i in range(len(frame))])
    return frame


def register_version(app: Embedded, rows: int = 6000, seed: int = 1, *, hot: bool = False,
                     recipe: dict[str, Any] | None = None) -> int:
    """A version trained on ``rows`` readings of the normal (or ``hot``) regime and profiled on as many
    others (reference data it did not train on, as ``driftline model register --reference`` takes)."""
    rng = np.random.default_rng(seed)
    frame, reference = gearbox(rows, rng, hot=hot), gearbox(rows, rng, hot=hot)
    features, labels = frame.drop(columns="status"), frame["status"].to_numpy(dtype=object)
    recipe = recipe or default_recipe("classification")
    trained = train(recipe, CONTRACT, features, labels)
    profile = reference_profile(trained.estimator, CONTRACT, reference.drop(columns="status"))
    version = app.registry.register(
        MODEL, trained.estimator, CONTRACT, actor="test", reason="a gearbox model", recipe=recipe,
        params=recipe.get("params", {}), metrics=classification_metrics(trained.estimator, features, labels),
        lineage={"source": "tests/e2e/gearbox_stream.py", "rows": rows, "hot": hot}, profile=profile)
    return version.version


def register_champion(app: Embedded, rows: int = 6000, seed: int = 1, recipe: dict[str, Any] | None = None) -> int:
    """v1, trained on the normal regime, as champion."""
    version = register_version(app, rows, seed, recipe=recipe)
    app.registry.set_alias(MODEL, "champion", version, actor="test", reason="first champion")
    return version


@dataclass
class GearboxRun:
    """Streams a frame through ``app`` chunk by chunk; remembers requests and model events seen."""

    app: Embedded
    chunk: int = 1000
    label_delay: int = 2000  # a label arrives this many events after its event
    labels: bool = True  # False: events only (data drift needs no labels)
    requests: list[dict[str, Any]] = field(default_factory=list)  # RetrainRequests, with the events streamed
    model_events: list[dict[str, Any]] = field(default_factory=list)
    streamed: int = 0

    def __post_init__(self):
        self._producer = self.app.bus.producer()
        self._watch = self.app.bus.consumer("gearbox-test-watch", [RETRAIN, MODELS])

    def feed(self, frame: pd.DataFrame) -> None:
        """Events of ``frame``, their labels ``label_delay`` events later (the last ones at the end)."""
        labels_from = 0
        for start in range(0, len(frame), self.chunk):
            self._send(FEATURES, [_event(r) for r in frame.iloc[start:start + self.chunk].itertuples(index=False)])
            upto = max(start + self.chunk - self.label_delay, 0)
            self._send(LABELS, [_label(r) for r in frame.iloc[labels_from:upto].itertuples(index=False)])
            labels_from = max(labels_from, upto)
            self.streamed += min(self.chunk, len(frame) - start)
            self.app.pump()
            self._watch_bus()
        self._send(LABELS, [_label(r) for r in frame.iloc[labels_from:].itertuples(index=False)])
        self.app.pump()
        self._watch_bus()

    def _send(self, topic: str, records: list[dict[str, Any]]) -> None:
        if topic == LABELS and not self.labels:
            return
        for record in records:
            self._producer.produce(topic, self.app.codec.encode(topic, record), key=record["event_id"].encode())
        self._producer.flush()

    def _watch_bus(self) -> None:
        while batch := self._watch.poll_batch(1000, 0.0):
            for m in batch:
                record = self.app.codec.decode(m.topic, m.value)
                if m.topic == RETRAIN:
                    self.requests.append({**record, "streamed": self.streamed})
                else:
                    self.model_events.append({**record, "streamed": self.streamed})
            self._watch.commit(next_offsets(batch))

    def publish_model_event(self, event: dict[str, Any]) -> None:
        """A ModelEvent on the ``models`` topic, as the registry's outbox publishes one."""
        self._producer.produce(MODELS, self.app.codec.encode(MODELS, event), key=event["model"].encode())
        self._producer.flush()

    def promotions(self) -> list[dict[str, Any]]:
        return [e for e in self.model_events if e["action"] == "alias_moved" and e["alias"] == "champion"
                and e["actor"] == "retrainer"]


def _event(r) -> dict[str, Any]:
    return {"model": MODEL, "event_id": r.event_id, "entity_id": r.event_id, "event_time": int(r.event_time),
            "numeric_features": {n: float(getattr(r, n)) for n in NUMERIC},
            "categorical_features": {c: str(getattr(r, c)) for c in CATEGORICAL}}


def _label(r) -> dict[str, Any]:
    return {"model": MODEL, "event_id": r.event_id, "label": r.status, "value": None,
            "label_time": int(r.event_time) + 60_000}
