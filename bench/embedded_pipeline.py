"""Embedded pipeline events/s vs the same events only encoded → in-process bus → decoded.

The ratio says what share of the raw transport speed the full pipeline keeps
(ingest validation, scoring, logging to chDB, joining labels).
"""

from __future__ import annotations

import os
import tempfile

from bench.common import report, timed
from driftline.bus import next_offsets
from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.config import Settings
from driftline.demo import DemoPlan, feature_events, run_demo
from driftline.scenario import CreditScenario
from driftline.topics import FEATURES

EVENTS = int(os.environ.get("BENCH_EVENTS", "50000"))


def transport_only(events: list[dict]) -> float:
    codec = Codec(registry_client(None))
    bus = MemoryBus()
    bus.create_topics({FEATURES: 3})
    producer, consumer = bus.producer(), bus.consumer("bench", [FEATURES])

    def run() -> None:
        for start in range(0, len(events), 1000):
            for e in events[start:start + 1000]:
                producer.produce(FEATURES, codec.encode(FEATURES, e), key=e["entity_id"].encode())
            while batch := consumer.poll_batch(1000, 0.0):
                for m in batch:
                    codec.decode(m.topic, m.value)
                consumer.commit(next_offsets(batch))

    return len(events) / timed(run)


def run() -> dict:
    events = feature_events(CreditScenario().generate(0, EVENTS))
    baseline = transport_only(events)
    with tempfile.TemporaryDirectory() as home:
        os.environ["DRIFTLINE_HOME"] = home
        pipeline = run_demo(Settings(), DemoPlan(events=EVENTS), progress=False)["events_per_s"]
    return report("embedded_pipeline", events=EVENTS, pipeline_events_per_s=round(pipeline),
                  transport_events_per_s=round(baseline), ratio=round(pipeline / baseline, 3))
