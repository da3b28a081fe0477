"""Exactly-once where users count, as a user meets it: ``driftline up`` in a subprocess, real HTTP,
an order-returns model (not the demo's credit data).

- 20 labels re-sent (a client retry): each joined once, label coverage stays <= 1, and the
  ``labeled`` topic (read from up's bus log after it stops) holds each joined event once;
- a label with a different value for a joined event: a dead letter "duplicate label", the first stays;
- labels for a model the registry does not know: 422 per record;
- more early labels than ``DRIFTLINE_LABEL_MAX_PENDING``: the overflow is dead-lettered
  "pending labels full", with its bytes;
- a misspelt concept detector: ``driftline up`` and ``driftline serve drift-detector`` exit 1
  with a message naming it and the choices, no traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess

import fastavro
import httpx
import pytest

from driftline.bus.memory import MemoryBus
from driftline.codec import schema_text
from driftline.models import DEFAULT_RECIPE
from driftline.topics import ALL_TOPICS, LABELED
from driftline.training import train

from driftline.testing.basket_orders import CONTRACT, MODEL, events, labels, orders
from driftline.testing.home_store import home_count

from test_up import BIN, Up, free_port, wait_for

TOKEN = "registry-secret"
JOINED = f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'joined'"
PENDING = f"SELECT count() FROM labels FINAL WHERE model = '{MODEL}' AND status = 'pending'"


def dead(reason: str) -> str:
    return f"SELECT count() FROM dead_letters FINAL WHERE service = 'label-joiner' AND startsWith(error, '{reason}')"


@pytest.fixture
def up_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = {**os.environ, "DRIFTLINE_HOME": str(home), "DRIFTLINE_REGISTRY_TOKEN": TOKEN,
           "DRIFTLINE_LABEL_MAX_PENDING": "5", "DRIFTLINE_RETRAIN_MIN_ROWS": "1000000"}
    env.pop("DRIFTLINE_STORE_DSN", None)
    monkeypatch.setenv("DRIFTLINE_HOME", str(home))
    return env


def register_model(url: str) -> None:
    from driftline.registry.client import RegistryClient

    frame, y = orders(1_000_000, 2000)
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, y)
    client = RegistryClient(url, TOKEN)
    version = client.register(MODEL, trained.estimator, CONTRACT, actor="test", reason="first", recipe=DEFAULT_RECIPE,
                              profile=trained.profile, lineage={"rows": len(frame)})
    client.set_alias(MODEL, "champion", version.version, actor="test", reason="first champion")


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_resent_conflicting_unknown_and_overflowing_labels_through_up(up_env, tmp_path):
    up = Up(up_env, free_port(), tmp_path / "up.log")
    try:
        register_model(up.url)
        assert httpx.post(up.url + "/v1/events", json=events(0, 300), timeout=60).status_code == 200
        assert httpx.post(up.url + "/v1/labels", json=labels(0, 100), timeout=60).status_code == 200
        wait_for(lambda: home_count(JOINED) == 100, 120, "100 labels joined")

        # A client retry of 20 labels: accepted by ingest, absorbed by the joiner.
        assert httpx.post(up.url + "/v1/labels", json=labels(0, 20), timeout=60).status_code == 200
        wait_for(lambda: metric(up.url, "driftline_second_labels_total", 'outcome="retry"') == 20, 120,
                 "20 re-sent labels absorbed")
        # A different label for a joined event: the first wins, the second is a dead letter.
        flipped = {**labels(3, 1)[0]}
        flipped["label"] = "kept" if flipped["label"] == "returned" else "returned"
        assert httpx.post(up.url + "/v1/labels", json=flipped, timeout=60).status_code == 200
        wait_for(lambda: home_count(dead("duplicate label")) == 1, 120, "the conflicting label dead-lettered")

        # Labels for a model the registry has never heard of: refused one by one.
        unknown = httpx.post(up.url + "/v1/labels", timeout=60, json=[
            {"model": "no-such-model", "event_id": "a", "label": "kept"},
            {"model": "no-such-model", "event_id": "b", "label": "kept"}])
        assert unknown.status_code == 422
        assert [(r["index"], r["status"]) for r in unknown.json()["rejected"]] == [(0, 422), (1, 422)]
        assert "unknown model 'no-such-model'" in unknown.json()["rejected"][0]["errors"][0]["message"]

        # Early labels (their events not sent yet) beyond the pending cap of 5.
        assert httpx.post(up.url + "/v1/labels", json=labels(1500, 8), timeout=60).status_code == 200
        wait_for(lambda: home_count(dead("pending labels full")) == 3, 120, "3 labels over the pending cap")
        assert home_count(PENDING) == 5 and home_count(JOINED) == 100
        coverage = f"SELECT max(value) FROM drift_metrics FINAL WHERE model = '{MODEL}' AND statistic = 'coverage'"
        wait_for(lambda: home_count(f"SELECT count() FROM ({coverage}) WHERE `max(value)` > 0") == 1, 120,
                 "coverage written")
    finally:
        assert up.stop(signal.SIGINT) == 0

    # up has stopped: its bus log is ours to read. Each joined event is on `labeled` once.
    bus = MemoryBus(log_dir=tmp_path / "home" / "bus")
    bus.create_topics({t: 3 for t in ALL_TOPICS})
    consumer = bus.consumer("probe", [LABELED])
    # up's schema ids were its in-process registry's: read the Avro body after the 5-byte header.
    schema = fastavro.parse_schema(json.loads(schema_text("LabeledPrediction")))
    records = []
    while batch := consumer.poll_batch(10_000, 0.0):
        records.extend(fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schema) for m in batch)
    assert len(records) == 100 and len({r["event_id"] for r in records}) == 100
    first = {r["event_id"]: r["label"] for r in records}
    assert first["order-3"] == labels(3, 1)[0]["label"]
    bus.close()


@pytest.mark.parametrize("command", [["up", "--port", "0"], ["serve", "drift-detector"]])
def test_a_misspelt_detector_stops_the_command_with_a_clear_message(command, tmp_path):
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path / "home"),
           "DRIFTLINE_CONCEPT_DETECTORS": '{"basket-return": "ADWINN"}'}
    done = subprocess.run([str(BIN / "driftline"), *command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "unknown concept drift detector 'ADWINN' for model 'basket-return'" in done.stderr
    assert "ADWIN, DDM, EDDM, HDDM_A, HDDM_W, KSWIN, PageHinkley" in done.stderr
    assert "Traceback" not in done.stderr
