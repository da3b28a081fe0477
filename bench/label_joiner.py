"""The label-joiner on its own: CPU microseconds per event of ``LabelJoinerService.handle`` and of its
store inserts over chDB, store queries per batch, and bytes per remembered prediction.

``python -m bench label_joiner``. Batches of 500 predictions and the labels of the events
three batches earlier, decoded by the real codec, on a fresh chDB store; CPU time
(``time.process_time``), so other processes on the machine weigh less than in wall time.
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
import tracemalloc

from bench.common import report

BATCHES = 40
BATCH = 500


def _prediction(i: int, rng: random.Random) -> dict:
    return {"prediction_id": f"pump-{i}:1:champion", "event_id": f"pump-{i}", "entity_id": f"station-{i % 97}",
            "model": "pump-failure", "model_version": 1, "role": "champion", "score": rng.random(),
            "scores": {"fails": 0.3, "runs": 0.7}, "predicted_label": "runs",
            "numeric_features": {f"vibration_{k}": rng.random() for k in range(8)},
            "categorical_features": {"site": "north", "vendor": "acme", "shift": "night"},
            "event_time": 1_790_000_000_000 + i, "prediction_time": 1_790_000_000_050 + i}


def _label(i: int, rng: random.Random) -> dict:
    return {"model": "pump-failure", "event_id": f"pump-{i}", "label": rng.choice(["fails", "runs"]), "value": None,
            "label_time": 1_790_000_600_000 + i}


def run() -> dict[str, object]:
    from driftline.bus.base import Message
    from driftline.codec import Codec, registry_client
    from driftline.runner import Incoming
    from driftline.services.label_joiner.logic import LabelJoiner
    from driftline.services.label_joiner.service import LabelJoinerService
    from driftline.store import Store
    from driftline.topics import LABELS, PREDICTIONS

    codec = Codec(registry_client(None))
    rng = random.Random(12)
    offsets = {PREDICTIONS: 0, LABELS: 0}

    def incoming(topic: str, record: dict) -> Incoming:
        value = codec.encode(topic, record)
        offsets[topic] += 1
        return Incoming(topic, codec.decode(topic, value),
                        Message(topic, 0, offsets[topic], record["event_id"].encode(), value, 0))

    batches = []
    for b in range(BATCHES):
        items = [incoming(PREDICTIONS, _prediction(i, rng)) for i in range(b * BATCH, (b + 1) * BATCH)]
        if b >= 3:
            items += [incoming(LABELS, _label(i, rng)) for i in range((b - 3) * BATCH, (b - 2) * BATCH)]
        batches.append(items)
    events = sum(len(batch) for batch in batches)

    with tempfile.TemporaryDirectory(prefix="bench-joiner-") as home:
        store = Store(f"chdb://{home}/store")
        store.migrate()
        queries = [0]
        query = store.query
        store.query = lambda sql, parameters=None: queries.__setitem__(0, queries[0] + 1) or query(sql, parameters)
        service = LabelJoinerService.over_store(store, 3_600_000, 0)
        handle_s = insert_s = 0.0
        for batch in batches:
            started = time.process_time()
            out = service.handle(batch, 1_790_001_000_000)
            handle_s += time.process_time() - started
            started = time.process_time()
            for table, rows in out.rows.items():
                store.insert(table, rows)
            insert_s += time.process_time() - started
        store.close()

    raw = [item.message.value for batch in batches for item in batch if item.topic == PREDICTIONS][:10_000]
    joiner = LabelJoiner(lambda model, ids: {}, recent_capacity=len(raw))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(raw), BATCH):
        joiner.process([codec.decode(PREDICTIONS, value) for value in raw[start:start + BATCH]], [], 0)
    gc.collect()
    per_prediction = (tracemalloc.get_traced_memory()[0] - before) / len(raw)
    tracemalloc.stop()
    return report("label_joiner", events=events, handle_us_per_event=round(1e6 * handle_s / events, 2),
                  insert_us_per_event=round(1e6 * insert_s / events, 2), store_queries=queries[0],
                  batches=BATCHES, bytes_per_remembered_prediction=round(per_prediction))


if __name__ == "__main__":
    run()
