"""Offered load at 2× what the embedded pipeline sustains, for 60 s: memory, lag, drain, counts.

The embedded pipeline (every service in one process over the in-process bus and chDB)
first gets a backlog of ``BENCH_OVERLOAD_WARM_EVENTS`` basket orders of our own model
(a label for every other one) through ingest; the rate at which its runners, in their
own thread as ``driftline up`` runs them, drain it (predictor → label-joiner →
drift-detector) is what it sustains, *R*. Then a client offers orders and labels at
2·R per second for ``BENCH_OVERLOAD_SECONDS``, Avro straight to the ``features`` and
``labels`` topics, while the runners run in their own thread. What the bus refuses
because consumers lag too far (:class:`BusFull`, per partition
``BENCH_OVERLOAD_MAX_LAG_MB``) the client sends again later, as ingest's clients
told 503 do. Then it stops offering new records and
waits until every group's lag is 0.

Printed: R, the rate actually offered, peak RSS of the process (sampled every 0.25 s)
and RSS before the overload, the largest total consumer lag, how many records the
bus refused (and were sent again), how long the lag took to drain, and the counts:
predictions and joined labels in the store against orders and labels sent (lost must
be 0). The ratio is the offered rate over R.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.baskets import CONTRACT, MODEL, events_and_labels, trained_model
from bench.common import report
from driftline.bus import BusFull
from driftline.config import Settings
from driftline.entry.embedded import Embedded
from driftline.topics import FEATURES, LABELS

SECONDS = float(os.environ.get("BENCH_OVERLOAD_SECONDS", "60"))
MAX_LAG_MB = float(os.environ.get("BENCH_OVERLOAD_MAX_LAG_MB", "4"))
WARM_EVENTS = int(os.environ.get("BENCH_OVERLOAD_WARM_EVENTS", "20000"))
TICK_S = 0.1
CHUNK = 1000


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def total_lag(app: Embedded) -> int:
    return sum(sum(runner.consumer.lag().values()) for runner in app.runners)


def count(app: Embedded, sql: str, run: str) -> int:
    return int(app.store.scalar(sql + " AND startsWith(event_id, {p:String})", {"p": f"{run}-"}))


PREDICTED = f"SELECT count() FROM predictions FINAL WHERE model = '{MODEL}' AND role = 'champion'"
JOINED = f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'"


def sustained_events_per_s(app: Embedded, run: str) -> float:
    """Orders (with their labels) per second the runners drain from a backlog, running in their own
    thread as ``driftline up`` runs them: the backlog is ingested first, then timed until lag is 0."""
    for start in range(0, WARM_EVENTS, CHUNK):
        events, labels = events_and_labels(run, start, CHUNK)
        app.ingest.submit(FEATURES, events)
        app.ingest.submit(LABELS, labels)
    stop = threading.Event()
    runners = threading.Thread(target=app.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    runners.start()
    while total_lag(app) or count(app, PREDICTED, run) < WARM_EVENTS:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    runners.join()
    return WARM_EVENTS / elapsed


class Offered:
    """The client: produces what is due each tick as Avro straight to the topics (what any Avro
    producer does, without ingest's checks, so one process can offer more than it consumes), and
    again what the bus refused (:class:`BusFull`, its backpressure)."""

    def __init__(self, app: Embedded, run: str):
        self.app, self.run = app, run
        self.producer = app.bus.producer()
        self.next_order = 0
        self.retry: dict[str, list[tuple[bytes, bytes]]] = {FEATURES: [], LABELS: []}
        self.sent = {FEATURES: 0, LABELS: 0}
        self.refused = 0

    def send(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        records = self.retry[topic] + records
        for position, (key, value) in enumerate(records):
            try:
                self.producer.produce(topic, value, key=key)
            except BusFull:
                self.retry[topic] = records[position:]
                self.refused += len(records) - position
                break
            self.sent[topic] += 1
        else:
            self.retry[topic] = []

    def tick(self, n: int) -> None:
        events, labels = events_and_labels(self.run, self.next_order, n)
        self.next_order += n
        encode = self.app.codec.encode
        self.send(FEATURES, [(e["entity_id"].encode(), encode(FEATURES, e)) for e in events])
        self.send(LABELS, [(x["event_id"].encode(), encode(LABELS, x)) for x in labels])


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="driftline-bench-overload-") as home:
        app = Embedded(Settings(home=Path(home)))
        try:
            trained, recipe = trained_model()
            version = app.registry.register(MODEL, trained.estimator, CONTRACT, actor="bench", recipe=recipe,
                                            profile=trained.profile)
            app.registry.set_alias(MODEL, "champion", version.version, actor="bench", reason="bench")
            sustained = sustained_events_per_s(app, f"warm{uuid.uuid4().hex[:6]}")
            app.bus.max_lag_bytes = int(MAX_LAG_MB * (1 << 20))  # backpressure engages within the run

            run_id = f"over{uuid.uuid4().hex[:6]}"
            client = Offered(app, run_id)
            rss_before, peak, max_lag = rss_mb(), 0.0, 0
            stop_runners, stop_sampler = threading.Event(), threading.Event()
            runners = threading.Thread(target=app.run, args=(stop_runners,), daemon=True)

            samples: list[tuple[float, float, int]] = []  # (seconds since the offer began, RSS MB, lag)

            def sample() -> None:
                nonlocal peak, max_lag
                while not stop_sampler.is_set():
                    rss, lag = rss_mb(), total_lag(app)
                    peak, max_lag = max(peak, rss), max(max_lag, lag)
                    samples.append((time.perf_counter() - started, rss, lag))
                    stop_sampler.wait(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            started = time.perf_counter()
            runners.start()
            sampler.start()
            rate = 2 * sustained
            while (elapsed := time.perf_counter() - started) < SECONDS:
                due = int(rate * min(elapsed + TICK_S, SECONDS)) - client.next_order
                if due > 0:
                    client.tick(due)
                time.sleep(max(0.0, started + elapsed + TICK_S - time.perf_counter()))
            offered_s = time.perf_counter() - started
            offered_rate = client.next_order / offered_s
            lag_at_end = total_lag(app)
            while client.retry[FEATURES] or client.retry[LABELS]:  # what the bus refused, sent again
                client.tick(0)
                time.sleep(TICK_S)
            drain_started = time.perf_counter()
            deadline = drain_started + 900
            while (total_lag(app) or count(app, PREDICTED, run_id) < client.sent[FEATURES]) and time.perf_counter() < deadline:
                time.sleep(0.25)
            drain_s = time.perf_counter() - drain_started
            stop_sampler.set()
            sampler.join()
            stop_runners.set()
            runners.join()
            predicted, joined = count(app, PREDICTED, run_id), count(app, JOINED, run_id)
            final_lag = total_lag(app)
            # RSS and lag at each quarter of the offered phase, then at the end of the drain: a
            # bounded process levels off instead of growing with the time it is overloaded.
            marks = [SECONDS * q / 4 for q in (1, 2, 3, 4)]
            quarters = [next(((round(r), lag) for t, r, lag in samples if t >= m), None) for m in marks]
            end_of_drain = (round(samples[-1][1]), samples[-1][2]) if samples else None
        finally:
            app.close()
    return report("overload", sustained_events_per_s=round(sustained), offered_events_per_s=round(offered_rate),
                  ratio=round(offered_rate / sustained, 2), seconds=SECONDS, max_lag_mb_per_partition=MAX_LAG_MB,
                  rss_before_mb=round(rss_before), peak_rss_mb=round(peak),
                  rss_mb_and_lag_by_quarter=quarters, rss_mb_and_lag_after_drain=end_of_drain, max_lag_records=max_lag,
                  lag_when_offer_stopped=lag_at_end, refused_then_resent=client.refused,
                  drain_s=round(drain_s, 1), final_lag=final_lag, orders_sent=client.sent[FEATURES],
                  predictions=predicted, labels_sent=client.sent[LABELS], labels_joined=joined,
                  lost=client.sent[FEATURES] - predicted + client.sent[LABELS] - joined)


if __name__ == "__main__":
    run()
