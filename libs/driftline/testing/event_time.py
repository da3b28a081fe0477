"""A pump-sensor prediction stream for the event-time tests (any number of partitions, embedded or
Kafka): it is written straight to the ``predictions`` topic, read by an in-process drift-detector
runner, and checked against what the store's ``drift_metrics`` shows per window."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.drift import SCORE, ReferenceProfile
from driftline.topics import PREDICTIONS

MODEL = "pump-et"
WINDOW_MS = 10_000
SPACING_MS = 20  # 500 events per window
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window size
FAR_AHEAD_MS = 58 * 86_400_000
END_OF_TIME_MS = 253_402_214_399_000  # 9999-12-31T23:59:59Z


def reference_profile() -> ReferenceProfile:
    rng = np.random.default_rng(11)
    return ReferenceProfile.fit(numeric={"pressure_kpa": rng.normal(300, 20, 5_000)},
                                categorical={"valve": rng.choice(["open", "half", "shut"], 5_000)},
                                score=rng.uniform(size=5_000), model=MODEL, version=1)


@dataclass
class _Version:
    profile: dict


class ProfileRegistry:
    """The one method the drift-detector asks of a registry: a version and its reference profile."""

    def __init__(self):
        self._profile = reference_profile().to_dict()

    def get(self, model: str, version: int) -> _Version:
        return _Version(self._profile)


def predictions(ids, times) -> list[dict[str, Any]]:
    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    return [{"prediction_id": f"et{i}:1:champion", "event_id": f"et{i}", "entity_id": f"pump-{i % 97}",
             "model": MODEL, "model_version": 1, "role": "champion", "score": float(rng.uniform()), "scores": {},
             "predicted_label": "1", "numeric_features": {"pressure_kpa": float(rng.normal(300, 20))},
             "categorical_features": {"valve": str(rng.choice(["open", "half", "shut"]))},
             "event_time": int(t), "prediction_time": int(t)} for i, t in zip(ids, times)]


def produce(bus, codec, records: list[dict[str, Any]]) -> None:
    """Straight to the predictions topic, keyed by event id (the predictor's key)."""
    producer = bus.producer()
    for r in records:
        producer.produce(PREDICTIONS, codec.encode(PREDICTIONS, r), key=r["event_id"].encode())
    producer.flush()


def partition_of(event_id: str, partitions: int) -> int:
    """CRC32 of the key, as both buses partition."""
    return zlib.crc32(event_id.encode()) % partitions


def drain(runner, total: int, timeout_s: float = 60.0) -> None:
    """Step the runner until it has processed ``total`` records (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while runner.processed < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"the drift-detector processed {runner.processed} of {total} records; "
                                 f"assigned {sorted(runner.consumer.assigned() or ())}, "
                                 f"positions {runner.consumer.positions()}, lag {runner.consumer.lag()}")
        runner.step(0.5)


@dataclass
class WindowRows:
    psi: dict[tuple[int, int], int]  # score PSI window -> n
    late: dict[tuple[int, int], int]
    ahead: dict[tuple[int, int], int]


def window_rows(store) -> WindowRows:
    def rows(where: str) -> dict[tuple[int, int], int]:
        _, got = store.query(f"SELECT window_start, window_end, n FROM drift_metrics FINAL WHERE model = '{MODEL}' "
                             f"AND {where}")
        return {(int(s), int(e)): int(n) for s, e, n in got}

    return WindowRows(rows(f"statistic = 'psi' AND feature = '{SCORE}'"),
                      rows("statistic = 'late_events' AND feature = '__events__'"),
                      rows("statistic = 'ahead_events' AND feature = '__events__'"))


def closed_windows(in_order_ids, in_order_times, partitions: int, lateness_ms: int) -> set[tuple[int, int]]:
    """The windows the watermark (minimum over partitions of their latest event) has closed."""
    latest: dict[int, int] = {}
    for i, t in zip(in_order_ids, in_order_times):
        p = partition_of(f"et{i}", partitions)
        latest[p] = max(latest.get(p, t), int(t))
    watermark = min(latest.values())
    first = int(min(in_order_times)) // WINDOW_MS
    return {(k * WINDOW_MS, (k + 1) * WINDOW_MS) for k in range(first, watermark // WINDOW_MS + 1)
            if (k + 1) * WINDOW_MS + lateness_ms <= watermark}


def check_every_event_counted(rows: WindowRows, sent_times, closed: set[tuple[int, int]]) -> int:
    """Each closed window's PSI ``n`` plus its ``late_events`` equals the events sent in it; returns that sum."""
    sent = Counter((int(t) // WINDOW_MS * WINDOW_MS, int(t) // WINDOW_MS * WINDOW_MS + WINDOW_MS) for t in sent_times)
    assert set(rows.psi) == closed, (sorted(set(rows.psi) ^ closed)[:5], len(rows.psi), len(closed))
    got = {w: rows.psi[w] + rows.late.get(w, 0) for w in closed}
    assert got == {w: sent[w] for w in closed}
    assert set(rows.late) <= closed
    return sum(got.values())
