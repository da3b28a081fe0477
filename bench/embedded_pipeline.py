"""Embedded pipeline events/s vs the same events only encoded → in-process bus → decoded.

The ratio says what share of the raw transport speed the full pipeline keeps
(ingest validation, scoring, logging to chDB, joining labels, drift detection,
retraining). The run also splits the pipeline's time by service, which gives
the drift-detector's cost per event as a share of the whole pipeline's.

It also runs ``driftline demo`` now and at the baseline commit of issue 12
(:mod:`bench.baseline`), each in a subprocess, in this same run, and prints both
events/s and their ratio (the target is 3). ``BENCH_EVENTS`` sets the events of
every run (default 50,000); ``BENCH_BASELINE=0`` skips the baseline comparison,
``BENCH_BASELINE_REPEATS`` runs each side that many times, alternating (best kept).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict

from bench.baseline import now_vs_baseline
from bench.common import report, timed
from driftline.bus import next_offsets
from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.config import Settings
from driftline.entry.demo import DemoPlan, feature_events, run_demo
from driftline.runner import Runner
from driftline.entry.scenario import CreditScenario
from driftline.topics import FEATURES

EVENTS = int(os.environ.get("BENCH_EVENTS", "50000"))
BASELINE = os.environ.get("BENCH_BASELINE", "1") != "0"
BASELINE_REPEATS = int(os.environ.get("BENCH_BASELINE_REPEATS", "1"))


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


def pipeline_with_service_times() -> tuple[dict, dict[str, float]]:
    """Run the demo (with drift half-way) and time every runner step by service."""
    spent: dict[str, float] = defaultdict(float)
    step = Runner.step

    def timed_step(self, timeout_s=None):
        started = time.perf_counter()
        try:
            return step(self, timeout_s)
        finally:
            spent[self.service.name] += time.perf_counter() - started

    Runner.step = timed_step
    try:
        with tempfile.TemporaryDirectory() as home:
            os.environ["DRIFTLINE_HOME"] = home
            summary = run_demo(Settings(), DemoPlan(events=EVENTS), progress=False)
    finally:
        Runner.step = step
    return summary, dict(spent)


def run() -> dict:
    events = feature_events(CreditScenario().generate(0, EVENTS))
    baseline = transport_only(events)
    summary, spent = pipeline_with_service_times()
    pipeline = summary["events_per_s"]
    total_s = summary["elapsed_s"]
    line = report(
        "embedded_pipeline", events=EVENTS, pipeline_events_per_s=round(pipeline),
        transport_events_per_s=round(baseline), ratio=round(pipeline / baseline, 3),
        drift_detector_us_per_event=round(spent.get("drift-detector", 0.0) / EVENTS * 1e6, 1),
        pipeline_us_per_event=round(total_s / EVENTS * 1e6, 1),
        drift_detector_share=round(spent.get("drift-detector", 0.0) / total_s, 3),
        service_share={name: round(s / total_s, 3) for name, s in sorted(spent.items())},
    )
    if not BASELINE:
        return line
    versus = now_vs_baseline(EVENTS, BASELINE_REPEATS)
    if "baseline_skipped" in versus:
        print(f"embedded_pipeline: baseline comparison SKIPPED: {versus['baseline_skipped']}", flush=True)
    compared = report("embedded_pipeline_vs_baseline", events=EVENTS, **versus, target_ratio=3)
    return {**line, **{k: v for k, v in compared.items() if k not in line}}
