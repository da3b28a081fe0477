"""Scale-out on the in-process bus: joining groups get the same partition numbers of every topic,
topics read together must be co-partitioned, and a service with one snapshot of state runs as the
single owner of its group (a second instance stands by, then takes over with the owner's state)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from driftline.bus import next_offsets
from driftline.bus.copartition import TopicsNotCoPartitioned
from driftline.bus.memory import MemoryBus
from driftline.bus.single_owner import SingleOwnerConsumer
from driftline.codec import Codec, registry_client
from driftline.entry.wiring import Context, make_runner
from driftline.topics import ALL_TOPICS, LABELS, PREDICTIONS
from driftline.training import train

PARTITIONS = 6
FEATURES = {"basket_eur": "numeric", "items": "numeric"}


@pytest.mark.parametrize("members", [2, 3, 4, 5])
def test_members_of_a_joining_group_get_the_same_partition_numbers_of_both_topics(members):
    bus = MemoryBus()
    bus.create_topics({PREDICTIONS: PARTITIONS, LABELS: PARTITIONS})
    consumers = [bus.consumer("joiner", [PREDICTIONS, LABELS]) for _ in range(members)]
    seen = []
    for c in consumers:
        predictions = {p for t, p in c._assignment if t == PREDICTIONS}
        labels = {p for t, p in c._assignment if t == LABELS}
        assert predictions == labels and predictions  # an event's prediction and label meet here
        seen.extend(predictions)
    assert sorted(seen) == list(range(PARTITIONS))  # each partition to exactly one member
    consumers[0].close()  # a member leaves: the rest are rebalanced the same way
    for c in consumers[1:]:
        assert {p for t, p in c._assignment if t == PREDICTIONS} == {p for t, p in c._assignment if t == LABELS}


def test_a_group_refuses_topics_it_joins_when_their_partition_counts_differ():
    bus = MemoryBus()
    bus.create_topics({PREDICTIONS: 6, LABELS: 3})
    with pytest.raises(TopicsNotCoPartitioned) as caught:
        bus.consumer("driftline-label-joiner", [PREDICTIONS, LABELS])
    message = str(caught.value)
    assert "driftline-label-joiner" in message
    assert "predictions has 6" in message and "labels has 3" in message
    assert "--topic labels --partitions 6" in message
    bus.consumer("driftline-predictor", [PREDICTIONS])  # one topic alone: nothing to join


# --------------------------------------------------------------------------- single owner


def _predictions(model: str, n: int, seed: int = 5) -> list[dict]:
    """Prediction records of a model of our own: basket size and item count, 20 ms apart."""
    rng = np.random.default_rng(seed)
    start = 1_780_000_000_000
    return [{"prediction_id": f"o-{i}:1:champion", "event_id": f"o-{i}", "entity_id": f"shop-{i % 50}",
             "model": model, "model_version": 1, "role": "champion", "score": float(rng.random()), "scores": {},
             "predicted_label": "keep", "numeric_features": {"basket_eur": float(rng.gamma(2, 30) * (1 + i / n)),
                                                               "items": float(rng.poisson(4))},
             "categorical_features": {}, "event_time": start + 20 * i, "prediction_time": start + 20 * i}
            for i in range(n)]


@pytest.fixture
def baskets(settings, store, registry):
    """A model of our own registered with its reference profile, and settings with 4 s windows."""
    from driftline.contract import FeatureContract

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"basket_eur": rng.gamma(2, 30, 2000), "items": rng.poisson(4, 2000).astype(float)})
    labels = np.where(frame["basket_eur"] > 60, "churn", "keep")
    contract = FeatureContract(numeric=tuple(FEATURES), classes=("churn", "keep"))
    trained = train({"estimator": "logistic_regression", "params": {}}, contract, frame, labels)
    for model in ("alone", "pair"):
        registry.register(model, trained.estimator, contract, actor="test", profile=trained.profile)
    return settings.model_copy(update={"drift_window_size": 4_000, "drift_allowed_lateness_ms": 500,
                                       "drift_min_events": 20, "batch_size": 300})


def _windows(store, model):
    return store.query("SELECT feature, statistic, window_start, n, value FROM drift_metrics FINAL "
                       "WHERE model = {m:String} AND kind = 'data' ORDER BY feature, statistic, window_start",
                       {"m": model})[1]


def _context(settings, store, registry, model, n):
    codec = Codec(registry_client(None))
    bus = MemoryBus(retention_bytes=256 << 20)
    bus.create_topics({t: PARTITIONS for t in ALL_TOPICS})
    producer = bus.producer()
    for p in _predictions(model, n):
        producer.produce(PREDICTIONS, codec.encode(PREDICTIONS, p), key=p["event_id"].encode())
    return Context(settings, bus, codec, store, registry)


def _drain(*runners) -> None:
    while sum(r.step(0.0) for r in runners):
        pass


def test_a_second_drift_detector_stands_by_then_takes_over_with_the_same_windows(baskets, store, registry, caplog):
    n = 6000
    alone = make_runner("drift-detector", _context(baskets, store, registry, "alone", n))
    _drain(alone)
    expected = _windows(store, "alone")
    assert len(expected) > 20 and alone.processed == n

    ctx = _context(baskets, store, registry, "pair", n)
    first = make_runner("drift-detector", ctx)
    with caplog.at_level(logging.WARNING, logger="driftline.bus.single_owner"):
        second = make_runner("drift-detector", ctx)
    assert isinstance(second.consumer, SingleOwnerConsumer) and second.consumer.standby
    assert "another instance owns consumer group driftline-drift-detector" in caplog.text
    assert "stands by" in caplog.text
    assert ctx.bus.group_members("driftline-drift-detector") == [first.consumer.member_id()]  # never joined

    for _ in range(8):  # the owner reads part of the stream and checkpoints its state ...
        first.step(0.0)
        second.step(0.0)
    first.persist_state()
    assert second.processed == 0
    second.persist_state()  # ... and a standby never overwrites it
    saved = store.query("SELECT offsets FROM service_state FINAL WHERE service = 'drift-detector'")[1]
    assert len(saved) == 1 and '"predictions", 5' in saved[0][0]  # the owner's offsets, all 6 partitions

    for _ in range(3):  # the owner reads on past its checkpoint, then dies without saving again
        first.step(0.0)
    first.consumer.close()
    second.consumer.check_every_s = 0.0  # ask the coordinator at every poll instead of every 2 s
    _drain(second)  # the standby takes over: restores the saved state and seeks to its offsets
    assert not second.consumer.standby
    assert first.processed + second.processed > n  # it replayed what the dead owner's state had not saved
    got = _windows(store, "pair")
    assert [row[:4] for row in got] == [row[:4] for row in expected]  # same windows, same counts
    assert np.allclose([row[4] for row in got], [row[4] for row in expected])  # same PSI and friends


class _RacingBus(MemoryBus):
    """A bus whose coordinator says "empty" to the first ``lies`` questions: two instances join at once."""

    def __init__(self, lies: int):
        super().__init__()
        self.lies = lies

    def group_members(self, group):
        if self.lies > 0:
            self.lies -= 1
            return []
        return super().group_members(group)


def test_two_instances_that_join_at_once_end_with_one_owner_and_nothing_handed_out_twice():
    bus = _RacingBus(lies=2)
    bus.create_topics({PREDICTIONS: PARTITIONS})
    producer = bus.producer()
    for i in range(600):
        producer.produce(PREDICTIONS, f"v{i}".encode(), key=f"k{i}".encode())
    a = SingleOwnerConsumer(bus, "g", [PREDICTIONS], check_every_s=0.0)
    b = SingleOwnerConsumer(bus, "g", [PREDICTIONS], check_every_s=0.0)
    assert len(bus.group_members("g")) == 2  # both joined
    handed: dict[str, list] = {"a": [], "b": []}
    for _ in range(200):
        for name, c in (("a", a), ("b", b)):
            batch = c.poll_batch(100, 0.0)
            handed[name].extend(batch)
            c.commit(next_offsets(batch))
        if len(handed["a"]) + len(handed["b"]) >= 600:
            break
    owners = [name for name, c in (("a", a), ("b", b)) if not c.standby]
    assert len(owners) == 1
    assert handed[{"a": "b", "b": "a"}[owners[0]]] == []  # the one that left handed out nothing
    offsets = [(m.partition, m.offset) for m in handed[owners[0]]]
    assert len(offsets) == len(set(offsets)) == 600
