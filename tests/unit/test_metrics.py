"""Prometheus metrics after a run of the embedded pipeline: the counters equal the SQL counts.

The model is not the demo's: a pump-failure classifier with other features and a
categorical ``site``. The process-wide default registry accumulates over every test
in the session, so each assertion compares the change across this run.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline.config import Settings
from driftline.contract import FeatureContract
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_RECIPE
from driftline.topics import DLQ, FEATURES, LABELED, LABELS, PREDICTIONS
from driftline.training import train

MODEL = "pump-failure"
CONTRACT = FeatureContract(numeric=("vibration_mm_s", "bearing_temp_c"), categorical=("site",), classes=("0", "1"))
SITES = np.array(["rotterdam", "lyon", "gdansk"], dtype=object)
START_MS = 1_767_225_600_000  # 2026-01-01


def pumps(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame({"vibration_mm_s": rng.normal(4.0 + shift, 1.0, n),
                          "bearing_temp_c": rng.normal(60.0, 5.0, n),
                          "site": rng.choice(SITES, n)})
    risk = 1.5 * (frame["vibration_mm_s"] - 4.0) + 0.2 * (frame["bearing_temp_c"] - 60.0)
    labels = np.where(risk + rng.normal(0, 1, n) > 0, "1", "0").astype(object)
    return frame, labels


def events(frame: pd.DataFrame, first: int) -> list[dict]:
    return [{"model": MODEL, "event_id": f"reading-{first + i}", "entity_id": f"unit-{(first + i) % 40}",
             "event_time": START_MS + (first + i) * 100,
             "numeric_features": {"vibration_mm_s": float(row.vibration_mm_s), "bearing_temp_c": float(row.bearing_temp_c)},
             "categorical_features": {"site": row.site}}
            for i, row in enumerate(frame.itertuples(index=False))]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


COUNTERS = [
    ("driftline_records_out_total", {"service": "ingest", "topic": FEATURES}),
    ("driftline_records_out_total", {"service": "ingest", "topic": LABELS}),
    ("driftline_records_in_total", {"service": "predictor", "topic": FEATURES}),
    ("driftline_records_out_total", {"service": "predictor", "topic": PREDICTIONS}),
    ("driftline_records_out_total", {"service": "predictor", "topic": DLQ}),
    ("driftline_records_in_total", {"service": "label-joiner", "topic": PREDICTIONS}),
    ("driftline_records_out_total", {"service": "label-joiner", "topic": LABELED}),
    ("driftline_ingest_records_total", {"topic": FEATURES, "outcome": "accepted"}),
    ("driftline_ingest_records_total", {"topic": FEATURES, "outcome": "rejected"}),
    ("driftline_dead_letters_total", {"service": "ingest", "reason": "invalid"}),
    ("driftline_dead_letters_total", {"service": "ingest", "reason": "bad_body"}),
    ("driftline_dead_letters_total", {"service": "predictor", "reason": "unscorable"}),
    ("driftline_dead_letters_total", {"service": "predictor", "reason": "undecodable"}),
    ("driftline_retrain_requests_total", {"model": MODEL}),
    ("driftline_batch_seconds_count", {"service": "predictor"}),
    ("driftline_checkpoint_seconds_count", {"service": "drift-detector"}),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A pipeline run: 3000 events (the last 1500 with a vibration shift), labels for 2000 of them,
    10 invalid events, one body that is not JSON and 7 events of a model without a champion."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path_factory.mktemp("metrics") / "home"))
        monkeypatch.setenv("DRIFTLINE_DRIFT_WINDOW_BY", "count")
        monkeypatch.setenv("DRIFTLINE_DRIFT_WINDOW_SIZE", "500")
        monkeypatch.setenv("DRIFTLINE_RETRAIN_MIN_ROWS", "100000")  # no retrain here: a request is enough
        yield from _run()


def _run():
    before = {(name, tuple(sorted(labels.items()))): value(name, **labels) for name, labels in COUNTERS}
    rng = np.random.default_rng(7)
    app = Embedded(Settings())
    try:
        frame, labels = pumps(rng, 4000)
        trained = train(DEFAULT_RECIPE, CONTRACT, frame.iloc[:3000], labels[:3000])
        from driftline.training import reference_profile

        profile = reference_profile(trained.estimator, CONTRACT, frame.iloc[3000:])  # data it did not train on
        version = app.registry.register(MODEL, trained.estimator, CONTRACT, actor="test", recipe=DEFAULT_RECIPE,
                                        profile=profile)
        app.registry.set_alias(MODEL, "champion", version.version, actor="test", reason="first")
        calm, calm_labels = pumps(rng, 1500)
        shifted, shifted_labels = pumps(rng, 1500, shift=3.0)
        stream = events(calm, 0) + events(shifted, 1500)
        for start in range(0, len(stream), 500):
            app.ingest.submit(FEATURES, stream[start:start + 500])
            app.pump()
        bad = [{**e, "event_id": f"bad-{i}", "numeric_features": {"rpm": 1.0}} for i, e in enumerate(stream[:10])]
        app.ingest.submit(FEATURES, bad)
        app.ingest.submit_body(FEATURES, b"{not json")
        # A producer writing straight to the topic (no ingest): 7 events of a model without a
        # champion (unscorable) and 3 records that are not Avro (undecodable).
        producer = app.bus.producer()
        for i, event in enumerate(stream[:7]):
            orphan = {**event, "model": "no-such-model", "event_id": f"orphan-{i}"}
            producer.produce(FEATURES, app.codec.encode(FEATURES, orphan), key=orphan["entity_id"].encode())
        for i in range(3):
            producer.produce(FEATURES, b"not avro", key=f"junk-{i}".encode())
        truth = np.concatenate([calm_labels, shifted_labels])
        app.ingest.submit(LABELS, [{"model": MODEL, "event_id": f"reading-{i}", "label": str(truth[i]),
                                    "label_time": START_MS + i * 100 + 60_000} for i in range(2000)])
        app.pump()
        for runner in app.runners:
            runner.metrics.lag(runner.consumer, force=True)
        delta = {key: value(key[0], **dict(key[1])) - was for key, was in before.items()}
        yield app, delta
    finally:
        app.close()


def count(app, sql: str) -> int:
    return int(app.store.scalar(sql))


def test_counters_equal_the_sql_counts(run):
    app, delta = run

    def d(name, **labels):
        return delta[(name, tuple(sorted(labels.items())))]

    predictions = count(app, "SELECT count() FROM predictions FINAL")
    assert predictions == 3000
    assert d("driftline_records_out_total", service="predictor", topic=PREDICTIONS) == predictions
    assert d("driftline_records_in_total", service="label-joiner", topic=PREDICTIONS) == predictions
    accepted = count(app, f"SELECT count() FROM ingest_accepted FINAL WHERE model = '{MODEL}'")
    assert accepted == 3000
    assert d("driftline_ingest_records_total", topic=FEATURES, outcome="accepted") == accepted
    assert d("driftline_records_out_total", service="ingest", topic=FEATURES) == accepted
    assert d("driftline_records_in_total", service="predictor", topic=FEATURES) == accepted + 7 + 3
    assert d("driftline_records_out_total", service="ingest", topic=LABELS) == 2000
    joined = count(app, f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'")
    assert joined == 2000
    assert d("driftline_records_out_total", service="label-joiner", topic=LABELED) == joined
    # Dead letters: per service and category, as in the table.
    by_service = dict(app.store.query("SELECT service, count() FROM dead_letters FINAL GROUP BY service")[1])
    assert d("driftline_dead_letters_total", service="ingest", reason="invalid") + \
        d("driftline_dead_letters_total", service="ingest", reason="bad_body") == by_service["ingest"] == 11
    assert d("driftline_dead_letters_total", service="ingest", reason="bad_body") == 1
    assert d("driftline_dead_letters_total", service="predictor", reason="unscorable") == 7
    assert d("driftline_dead_letters_total", service="predictor", reason="undecodable") == 3
    assert by_service["predictor"] == 10
    assert d("driftline_records_out_total", service="predictor", topic=DLQ) == 10
    assert d("driftline_ingest_records_total", topic=FEATURES, outcome="rejected") == 11
    # Drift: the shift is seen, one request for the incident, as the retrain topic holds.
    requests = count(app, f"SELECT count() FROM drift_metrics FINAL WHERE model = '{MODEL}' AND statistic = 'psi' "
                          "AND feature = 'vibration_mm_s' AND value >= 0.25")
    assert requests >= 1
    assert d("driftline_retrain_requests_total", model=MODEL) == 1
    assert d("driftline_batch_seconds_count", service="predictor") >= 1
    assert d("driftline_checkpoint_seconds_count", service="drift-detector") >= 1


def test_domain_gauges_show_the_latest_values(run):
    app, _ = run
    latest_psi = app.store.query(
        f"SELECT value FROM drift_metrics FINAL WHERE model = '{MODEL}' AND feature = 'vibration_mm_s' "
        "AND statistic = 'psi' ORDER BY window_start DESC LIMIT 1")[1][0][0]
    assert value("driftline_psi", model=MODEL, feature="vibration_mm_s") == pytest.approx(latest_psi)
    assert value("driftline_psi", model=MODEL, feature="vibration_mm_s") >= 0.25
    assert value("driftline_psi", model=MODEL, feature="bearing_temp_c") < 0.25
    assert value("driftline_champion_version", service="predictor", model=MODEL) == 1
    coverage = REGISTRY.get_sample_value("driftline_label_coverage", {"model": MODEL})
    assert coverage is not None and 0.0 <= coverage <= 1.0
    # Nothing left unconsumed: every partition of every runner's group is at lag 0.
    lags = [s for f in text_string_to_metric_families(generate_latest(REGISTRY).decode())
            if f.name == "driftline_consumer_lag" for s in f.samples]
    services = {s.labels["service"] for s in lags}
    assert {"predictor", "label-joiner", "drift-detector", "retrainer"} <= services
    assert all(s.value == 0 for s in lags if s.labels["service"] == "predictor")


def test_label_values_are_bounded(run):
    """No event id or error text ever becomes a label value (the registry would grow without end)."""
    text = generate_latest(REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("driftline_"):
            for sample in family.samples:
                for label, label_value in sample.labels.items():
                    assert not label_value.startswith(("reading-", "unit-", "bad-", "orphan-", "junk-")), (family.name, sample.labels)
                    assert len(label_value) < 64, (family.name, label, label_value)


def test_memory_bus_lag_is_high_watermark_minus_committed():
    from driftline.bus.memory import MemoryBus

    bus = MemoryBus()
    bus.create_topics({"t": 2})
    producer = bus.producer()
    for i in range(10):
        producer.produce("t", b"x", key=f"k{i}".encode())
    consumer = bus.consumer("g", ["t"])
    assert sum(consumer.lag().values()) == 10
    batch = consumer.poll_batch(4, 0.0)
    assert sum(consumer.lag().values()) == 10  # read but not committed: still lag
    consumer.commit({(m.topic, m.partition): m.offset + 1 for m in batch})
    assert sum(consumer.lag().values()) == 6


def test_the_grafana_dashboard_queries_only_metrics_driftline_defines():
    import json
    import re
    from pathlib import Path

    import driftline.telemetry  # noqa: F401  (defines the metrics on the default registry)

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "infra/grafana/dashboards/driftline.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    used = {name for expr in exprs for name in re.findall(r"\bdriftline_\w+", expr)}
    defined = {s.name for f in REGISTRY.collect() if f.name.startswith("driftline_") for s in f.samples} | \
        {f.name + suffix for f in REGISTRY.collect() if f.name.startswith("driftline_")
         for suffix in ("_total", "_bucket", "_count", "_sum", "")}
    assert len(used) >= 10, used
    assert used <= defined, used - defined


def test_serve_on_a_busy_metrics_port_says_so_without_a_traceback(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
               "DRIFTLINE_HOME": str(tmp_path / "home"), "DRIFTLINE_METRICS_PORT": str(port)}
        out = subprocess.run([sys.executable, "-m", "driftline.entry.cli", "serve", "predictor"], env=env,
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "DRIFTLINE_METRICS_PORT" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_slow_lag_query_is_asked_less_often_so_it_never_holds_the_poll_loop():
    """Asking a broker for 24 partitions' watermarks took 12 s: asked every batch, it was the
    whole of the drift-detector's time. The next ask waits ten times as long as the last took."""
    from driftline.telemetry import RunnerMetrics

    class SlowConsumer:
        calls = 0

        def lag(self):
            SlowConsumer.calls += 1
            time.sleep(0.05)
            return {("predictions", 0): 3}

    metrics = RunnerMetrics("lag-test-service", lag_every_s=0.0)
    consumer = SlowConsumer()
    metrics.lag(consumer)
    for _ in range(20):  # well inside ten times the 0.05 s the first ask took
        metrics.lag(consumer)
    assert SlowConsumer.calls == 1
    metrics.lag(consumer, force=True)
    assert SlowConsumer.calls == 2
