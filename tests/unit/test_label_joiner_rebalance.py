"""A label that waits for its prediction survives a rebalance: when a second label-joiner
joins the group and takes over the label's partition, it adopts the labels waiting there
(they are ``pending`` in the store) and joins them when their predictions arrive."""

from __future__ import annotations

from driftline.bus import partition_for
from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.entry.wiring import Context, make_runner
from driftline.topics import ALL_TOPICS, LABELS, PREDICTIONS

PARTITIONS = 4
START = 1_780_000_000_000


def _prediction(event_id: str) -> dict:
    return {"prediction_id": f"{event_id}:1:champion", "event_id": event_id, "entity_id": "vessel-7",
            "model": "hull", "model_version": 1, "role": "champion", "score": 0.8, "scores": {},
            "predicted_label": "fouled", "numeric_features": {"speed_loss_pct": 6.5}, "categorical_features": {},
            "event_time": START, "prediction_time": START + 5}


def _label(event_id: str) -> dict:
    return {"model": "hull", "event_id": event_id, "label": "fouled", "value": None, "label_time": START + 60_000}


def _joined(store) -> set[str]:
    _, rows = store.query("SELECT event_id FROM labels FINAL WHERE status = 'joined'")
    return {r[0] for r in rows}


def test_a_waiting_label_is_joined_by_the_instance_its_partition_moves_to(settings, store, registry):
    bus = MemoryBus()
    bus.create_topics({topic: PARTITIONS for topic in ALL_TOPICS})
    codec = Codec(registry_client(None))
    ctx = Context(settings, bus, codec, store, registry)
    producer = bus.producer()

    def send(topic: str, key: str, record: dict) -> None:
        producer.produce(topic, codec.encode(topic, record), key=key.encode())

    first, second = make_runner("label-joiner", ctx), make_runner("label-joiner", ctx)
    held_by_second = {p for t, p in second.consumer.assigned() if t == LABELS}
    assert held_by_second and held_by_second != set(range(PARTITIONS))
    # Early labels: their predictions are not there yet, so each waits in the memory of the
    # instance that owns its partition.
    early = [f"hull-{i}" for i in range(40)]
    for event_id in early:
        send(LABELS, event_id, _label(event_id))
    while first.step(0.05) + second.step(0.05):
        pass
    _, rows = store.query("SELECT count() FROM labels FINAL WHERE status = 'pending'")
    assert rows[0][0] == len(early)
    moved = [e for e in early if partition_for(e.encode(), PARTITIONS) in held_by_second]
    assert moved

    second.close()  # leaves the group: its partitions, and the labels waiting there, move to the first
    for event_id in early:
        send(PREDICTIONS, event_id, _prediction(event_id))
    while first.step(0.05):
        pass
    # Before the first instance adopted the labels waiting in the store, those that had waited
    # in the second one stayed pending: their predictions found no label in the first's memory.
    assert _joined(store) == set(early)
    first.close()
