"""The demo's Monitor decodes labeled records only when its rolling accuracy is read, and reads
exactly the newest 2,000 champion errors however many records went by (challengers interleaved)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.entry.demo import Monitor
from driftline.topics import ALL_TOPICS, LABELED


def labeled(i: int, role: str, error: float) -> dict:
    return {"prediction_id": f"p{i}-{role}", "event_id": f"boiler-{i}", "model": "boiler", "model_version": 1,
            "role": role, "score": 0.5, "predicted_label": "1", "label": "0", "value": None, "error": error,
            "event_time": i, "prediction_time": i, "label_time": i}


def test_the_rolling_accuracy_is_the_newest_champion_errors_only(monkeypatch):
    codec = Codec(registry_client(None))
    bus = MemoryBus()
    bus.create_topics({topic: 2 for topic in ALL_TOPICS})
    monitor = Monitor(SimpleNamespace(codec=codec, bus=bus))
    monitor.PENDING_LABELED = 6000  # trimmed once on the way
    decoded = []
    decode = codec.decode
    monkeypatch.setattr(codec, "decode", lambda topic, data: decoded.append(topic) or decode(topic, data))
    producer, rng, champion_errors = bus.producer(), random.Random(3), []
    for i in range(12_000):
        role = "champion" if rng.random() < 0.6 else "challenger"
        error = float(rng.random() < (0.1 if role == "champion" else 0.5))
        if role == "champion":
            champion_errors.append(error)
        producer.produce(LABELED, codec.encode(LABELED, labeled(i, role, error)), key=b"boiler")  # one partition
        if i % 1000 == 999:
            monitor.poll()
    assert len(decoded) < 7500  # of 12,000: the records pushed out of the window were never decoded
    newest = champion_errors[-2000:]
    assert monitor.rolling_accuracy == 1 - sum(newest) / len(newest)
    assert list(monitor.errors) == newest


def test_no_labeled_record_yet_means_no_accuracy():
    bus = MemoryBus()
    bus.create_topics({topic: 1 for topic in ALL_TOPICS})
    assert Monitor(SimpleNamespace(codec=Codec(registry_client(None)), bus=bus)).rolling_accuracy is None
