"""The drift-detector counts each prediction and each joined label once, keeps that across a
restart, and frees a retired version's state after writing its last partial window."""

from __future__ import annotations

import numpy as np

from driftline.drift import AlertPolicy, ReferenceProfile, WindowSpec
from driftline.services.drift_detector.logic import DriftDetector

MIN = 60_000
RNG = np.random.default_rng(7)
PROFILE = ReferenceProfile.fit(numeric={"basket_eur": RNG.gamma(2.0, 30.0, 5_000)},
                               categorical={"device": RNG.choice(["ios", "android", "web"], 5_000)},
                               score=RNG.uniform(size=5_000))


def detector(**kwargs) -> DriftDetector:
    return DriftDetector(lambda model, version: PROFILE, WindowSpec("tumbling", "time", size=MIN),
                         AlertPolicy(consecutive_windows=1, min_events=1), **kwargs)


def predictions(start, n, version=1, t0=0):
    return [{"prediction_id": f"o{i}:{version}:champion", "event_id": f"o{i}", "model": "basket",
             "model_version": version, "role": "champion", "score": float(RNG.uniform()),
             "numeric_features": {"basket_eur": float(RNG.gamma(2.0, 30.0))},
             "categorical_features": {"device": "ios"}, "event_time": t0 + i * 100}
            for i in range(start, start + n)]


def labeled(ids, version=1):
    return [{"prediction_id": f"o{i}:{version}:champion", "event_id": f"o{i}", "model": "basket",
             "model_version": version, "role": "champion", "error": float(i % 2), "event_time": i * 100,
             "label_time": i * 100 + 5_000} for i in ids]


def window_counts(out):
    return {(r["window_start"], r["n"]) for r in out.metric_rows if r["statistic"] == "psi"}


def test_a_republished_batch_of_predictions_is_not_counted_twice():
    batch = predictions(0, 700)  # event times 0 .. 69.9 s
    closing = predictions(2_000, 1, t0=-2_000 * 100 + 130_000)  # one event at 130 s closes [60 s, 120 s)
    once, twice = detector(), detector()
    counted_once = window_counts(once.observe_predictions(batch, 1)) | window_counts(once.observe_predictions(closing, 3))
    counted_twice = window_counts(twice.observe_predictions(batch, 1))
    counted_twice |= window_counts(twice.observe_predictions(batch[-300:], 2))  # killed between flush and commit
    counted_twice |= window_counts(twice.observe_predictions(closing, 3))
    assert twice.skipped["predictions"] == 300
    assert counted_twice == counted_once == {(0, 600), (MIN, 100)}


def test_a_replayed_labeled_record_counts_once_and_n_equals_joined_labels_across_a_restart():
    first = detector()
    first.observe_predictions(predictions(0, 100), 1)
    first.observe_labeled(labeled(range(60)), 2)
    snapshot = first.snapshot()
    restarted = detector()
    restarted.restore(snapshot)
    restarted.observe_labeled(labeled(range(50, 80)), 3)  # 50..59 replayed by a label-joiner restart
    state = restarted._versions[("basket", 1)]
    assert state.detector.n_seen == 80 and restarted.skipped["labeled"] == 10
    coverage = [w.coverage for w in state.coverage.windows()]
    assert coverage == [0.8]  # 80 joined labels of 100 predictions, never above 1


def test_a_retired_version_writes_its_partial_window_and_is_freed():
    d = detector(retire_after_ms=10 * MIN)
    d.observe_predictions(predictions(0, 250, version=1), now_ms=0)  # 25 s of events: a window still open
    # v2 is promoted; its events (from 30 s) keep the model's watermark inside v1's window,
    # so that window is still open when v1 is retired (a watermark past it would close it).
    d.observe_predictions(predictions(0, 10, version=2, t0=30_000), now_ms=5 * MIN)
    assert ("basket", 1) in d._versions
    out = d.observe_predictions(predictions(10, 10, version=2, t0=30_000), now_ms=11 * MIN)
    assert ("basket", 1) not in d._versions and ("basket", 2) in d._versions
    last = {(r["model_version"], r["window_start"], r["n"]) for r in out.metric_rows
            if r["statistic"] == "psi" and r["model_version"] == 1}
    assert last == {(1, 0, 250)}  # the open window, written before the state went
    assert ("basket", 1) not in {(s["model"], s["version"]) for s in d.policy.snapshot()["states"]}
    again = detector()
    again.restore(d.snapshot())
    assert set(again._versions) == {("basket", 2)}
