"""The drift-detector's state saved by the previous release restores, and the detector then
behaves exactly as the previous release did: same metric rows, signals, requests and counts.

``data/drift_snapshot_v1.json`` was written by the code of commit 163e5bf (before issue 12's
speed work) running :func:`scenario`'s first half; it holds that snapshot and what the old code
emitted for the second half. Regenerate it only from that commit
(``python tests/unit/test_drift_snapshot_compat.py``), never from the current code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from driftline.bus.base import Message
from driftline.drift import AlertPolicy, ReferenceProfile, WindowSpec
from driftline.runner import Incoming, RollbackPoint
from driftline.services.drift_detector.logic import DriftDetector
from driftline.services.drift_detector.service import DriftDetectorService
from driftline.timeutil import to_datetime

FIXTURE = Path(__file__).parent / "data" / "drift_snapshot_v1.json"
MIN = 60_000
T0 = 1_800_000_000_000


def _profiles() -> dict[str, ReferenceProfile]:
    rng = np.random.default_rng(11)
    return {
        "basket": ReferenceProfile.fit(numeric={"basket_eur": rng.gamma(2.0, 30.0, 4_000),
                                                "items": rng.poisson(3.0, 4_000).astype(float)},
                                       categorical={"device": rng.choice(["ios", "android", "web"], 4_000)},
                                       score=rng.uniform(size=4_000)),
        "fleet": ReferenceProfile.fit(numeric={"speed_kmh": rng.normal(80, 15, 4_000)},
                                      categorical={"depot": rng.choice(["north", "south"], 4_000)},
                                      score=rng.uniform(size=4_000)),
    }


PROFILES = _profiles()


def detector() -> DriftDetector:
    return DriftDetector(lambda model, version: PROFILES.get(model), WindowSpec("tumbling", "time", size=MIN),
                         AlertPolicy(consecutive_windows=1, min_events=20), dedupe_predictions=900,
                         dedupe_labeled=700, max_skew_ms=10 * MIN, partitions=[0, 1])


def _predictions(rng, model, version, ids, times, shift=0.0, role="champion"):
    out = []
    for i, t in zip(ids, times):
        if model == "basket":
            numeric = {"basket_eur": float(rng.gamma(2.0, 30.0) + shift), "items": float(rng.poisson(3.0))}
            if i % 17 == 0:
                del numeric["items"]  # a missing feature
            categorical = {"device": str(rng.choice(["ios", "android", "web", "tv"]))}
        else:
            numeric = {"speed_kmh": float(rng.normal(80 + shift, 15))}
            categorical = {"depot": str(rng.choice(["north", "south"]))}
        out.append({"prediction_id": f"{model}-{i}:{version}:{role}", "event_id": f"{model}-{i}", "model": model,
                    "model_version": version, "role": role, "score": float(rng.uniform()),
                    "numeric_features": numeric, "categorical_features": categorical, "event_time": int(t)})
    return out


def _labeled(rng, predictions, drift=False):
    return [{**{k: p[k] for k in ("prediction_id", "event_id", "model", "model_version", "role", "event_time")},
             "error": float(rng.uniform() < (0.8 if drift else 0.1)), "label_time": p["event_time"] + 7_000}
            for p in predictions]


def scenario() -> list[tuple[str, list[dict], list[tuple[int, int]], int]]:
    """Batches ``(stream, records, positions, now_ms)``: two models over two partitions, a shadow,
    a new version, replays, late events, an event far ahead, drifting data and errors."""
    rng = np.random.default_rng(5)
    batches = []
    offsets = [0, 0]
    now = T0 + 5_000

    def positions(n, partitions):
        out = []
        for p in partitions[:n]:
            out.append((p, offsets[p]))
            offsets[p] += 1
        return out

    t = T0
    for step in range(24):
        n = 150
        times = t + np.sort(rng.integers(0, 20_000, n))
        model = "fleet" if step % 5 == 4 else "basket"
        version = 2 if (model == "basket" and step >= 16) else 1
        preds = _predictions(rng, model, version, range(step * 1000, step * 1000 + n), times,
                             shift=40.0 if step >= 12 else 0.0)
        if step % 6 == 2:
            preds += _predictions(rng, model, version, range(step * 1000, step * 1000 + 20), times[:20], role="shadow")
        if step % 7 == 3:
            preds += preds[:40]  # a republished tail
        if step == 9:
            preds += _predictions(rng, "basket", 1, range(90_000, 90_030), T0 + rng.integers(0, 20_000, 30))  # late
        if step == 14:
            preds += _predictions(rng, "basket", 1, [95_000], [t + 3_600_000])  # far ahead
        parts = [int(x) for x in rng.integers(0, 2, len(preds))]
        batches.append(("predictions", preds, positions(len(preds), parts), now))
        champions = [p for p in preds if p["role"] == "champion"]
        labeled = _labeled(rng, champions[: len(champions) // 2], drift=step >= 10)
        if step % 4 == 1:
            labeled += labeled[:25]  # replayed
        batches.append(("labeled", labeled, [(0, i) for i in range(len(labeled))], now + 1))
        t += 20_000
        now += 2_000
    return batches


def run(d: DriftDetector, batches) -> list:
    """What the detector emits for ``batches``, JSON-comparable."""
    emitted = []
    for stream, records, positions, now in batches:
        skipped = dict(d.skipped)
        if stream == "predictions":
            out = d.observe_predictions(records, now, positions)
        else:
            out = d.observe_labeled(records, now, positions)
        emitted.append({"rows": out.metric_rows, "signals": out.signals,
                        "requests": [r.to_dict() for r in out.requests], "late": out.late_events,
                        "ahead": out.ahead_events, "skipped": {k: d.skipped[k] - skipped[k] for k in skipped}})
    return json.loads(json.dumps(emitted))


HALF = 24


def _comparable(snapshot: bytes) -> dict:
    """A snapshot without the river detectors' pickles (equal detectors may pickle differently;
    the second half's detections compare them)."""
    data = json.loads(snapshot)
    for version in data["versions"]:
        version.pop("detector")
    for watermark in data["watermarks"].values():
        watermark.pop("restored", None)  # True after a restart until the next batch, by design
    return data


def test_state_saved_by_the_previous_release_restores_and_behaves_the_same():
    saved = json.loads(FIXTURE.read_text())
    batches = scenario()
    restored = detector()
    restored.restore(saved["snapshot"].encode())
    assert run(restored, batches[HALF:]) == saved["second_half"]


def test_the_current_release_emits_what_the_previous_one_did_and_its_snapshot_round_trips():
    saved = json.loads(FIXTURE.read_text())
    batches = scenario()
    d = detector()
    assert run(d, batches[:HALF]) == saved["first_half"]
    again = detector()
    again.restore(d.snapshot())
    assert _comparable(again.snapshot()) == _comparable(d.snapshot())
    assert run(again, batches[HALF:]) == saved["second_half"]


def test_records_with_datetimes_count_as_records_with_epoch_ms():
    """Until every decoder gives int milliseconds, a record may carry datetimes: same result."""
    batches = scenario()[:HALF]
    as_datetimes = [(stream, [{**r, **{k: to_datetime(r[k]) for k in ("event_time", "label_time") if k in r}}
                              for r in records], positions, now) for stream, records, positions, now in batches]
    assert run(detector(), as_datetimes) == run(detector(), batches)


@pytest.mark.parametrize("cheap_s", [-1.0, 10.0], ids=["replay", "point-per-batch"])
def test_a_rollback_point_puts_the_detector_back_exactly(cheap_s):
    """Batches whose commit is refused are undone and handled again: the state is the one of a
    run where each was handled once (the dedupe memory included: nothing counted twice)."""
    batches = scenario()
    straight, service = DriftDetectorService(detector()), DriftDetectorService(detector())
    asked = []  # profiles asked of the registry: once per version, not again at every rollback
    profile_of = service.detector.profile_of
    service.detector.profile_of = lambda model, version: asked.append((model, version)) or profile_of(model, version)
    point = RollbackPoint(service, every_s=3600.0, cheap_s=cheap_s)
    for i, (stream, records, positions, now) in enumerate(batches[:HALF]):
        incoming = [Incoming(stream, r, Message(stream, p, o, None, b"", now)) for r, (p, o) in zip(records, positions)]
        straight.handle(incoming, now)
        point.before_batch()
        service.handle(incoming, now)
        point.handled(incoming, now)
        if i % 5 == 3:  # the commit was refused: back to before this batch, then again
            point.undo_last()
            service.handle(incoming, now)
            point.handled(incoming, now)
    assert _comparable(service.snapshot()) == _comparable(straight.snapshot())
    assert asked and len(asked) == len(set(asked))
    assert run(service.detector, batches[HALF:]) == run(straight.detector, batches[HALF:])


if __name__ == "__main__":  # regenerate the fixture (from commit 163e5bf's code only)
    batches = scenario()
    d = detector()
    first = run(d, batches[:HALF])
    snapshot = d.snapshot().decode()
    second = run(d, batches[HALF:])
    FIXTURE.write_text(json.dumps({"snapshot": snapshot, "first_half": first, "second_half": second}))
    print(FIXTURE, FIXTURE.stat().st_size, file=sys.stderr)
