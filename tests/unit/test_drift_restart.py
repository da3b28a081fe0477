"""A drift-detector killed in the middle of a window resumes from its checkpoint and loses no counts."""

import numpy as np

import pandas as pd

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.entry.demo import TRAINING_OFFSET, feature_events
from driftline.registry import Registry
from driftline.entry.scenario import CONTRACT, CreditScenario
from driftline.topics import ALL_TOPICS, PREDICTIONS
from driftline.training import train
from driftline.entry.wiring import Context, make_runner

WINDOW_MS = 5_000
EVENTS = 12_000  # 10 ms apart: windows of 500 events


def predictions(model, n):
    events = feature_events(CreditScenario().generate(0, n))
    rng = np.random.default_rng(3)
    return [{"prediction_id": f"{e['event_id']}:1:champion", "event_id": e["event_id"], "entity_id": e["entity_id"],
             "model": model, "model_version": 1, "role": "champion", "score": float(s), "scores": {},
             "predicted_label": "1", "numeric_features": e["numeric_features"],
             "categorical_features": e["categorical_features"], "event_time": e["event_time"],
             "prediction_time": e["event_time"]} for e, s in zip(events, rng.random(n))]


def windows(store, model):
    return store.query(
        "SELECT feature, window_start, n, value FROM drift_metrics FINAL WHERE model = {m:String} AND kind = 'data' "
        "AND statistic = 'psi' ORDER BY feature, window_start", {"m": model})[1]


def test_restart_in_the_middle_of_a_window_loses_no_counts(settings, store, tmp_path):
    settings = settings.model_copy(update={"drift_window_size": WINDOW_MS, "drift_allowed_lateness_ms": 1000,
                                           "batch_size": 700})
    registry = Registry(tmp_path / "registry")
    data = CreditScenario().generate(TRAINING_OFFSET, 3000)
    trained = train({"estimator": "logistic_regression", "params": {}}, CONTRACT,
                    pd.DataFrame({**data.numeric, **data.categorical}), data.labels)
    for model in ("steady", "crashy"):
        registry.register(model, trained.estimator, CONTRACT, actor="t", profile=trained.profile)

    codec = Codec(registry_client(None))

    def context_with(model):
        bus = MemoryBus(retention_bytes=256 << 20)  # everything is produced before anyone subscribes
        bus.create_topics({t: 1 for t in ALL_TOPICS})
        producer = bus.producer()
        for p in predictions(model, EVENTS):
            producer.produce(PREDICTIONS, codec.encode(PREDICTIONS, p), key=p["event_id"].encode())
        return Context(settings, bus, codec, store, registry)

    # One detector runs uninterrupted over "steady" and never saves state.
    steady = make_runner("drift-detector", context_with("steady"))
    steady.state_every_s = float("inf")
    while steady.step(0.0):
        pass
    steady_rows = windows(store, "steady")
    assert len(steady_rows) > 200

    # The same stream as "crashy": state saved after batch 3, offsets committed up to batch 7,
    # then the process dies (no close(), so nothing more is persisted) in the middle of a window.
    crashy = context_with("crashy")
    first = make_runner("drift-detector", crashy)
    first.state_every_s = float("inf")
    for batch in range(7):
        first.step(0.0)
        if batch == 2:
            first.persist_state()
    first.consumer.close()  # the broker notices the dead member
    assert (first.processed * 10) % WINDOW_MS  # it died inside a window (events are 10 ms apart)

    second = make_runner("drift-detector", crashy)  # resumes from the saved state and its offsets
    while second.step(0.0):
        pass
    assert second.processed == EVENTS - 3 * 700  # it replayed from the state's offsets, not from the start

    crashy_rows = windows(store, "crashy")
    assert [(f, s, n) for f, s, n, _ in crashy_rows] == [(f, s, n) for f, s, n, _ in steady_rows]
    assert np.allclose([v for *_, v in crashy_rows], [v for *_, v in steady_rows])
    registry.close()
