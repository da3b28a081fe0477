"""``driftline send events|labels FILE`` as a user runs it: a subprocess posting to ingest on a real port.

The model is not the demo's: a machine-failure model with other features
(``temperature``, ``vibration``, ``line``). Each test checks that the counts the
command prints are what reached the topic and what is in ``dead_letters``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from driftline.bus import next_offsets
from driftline.bus.memory import MemoryBus
from driftline.contract import FeatureContract
from driftline.services.ingest.bounds import Bounds
from driftline.services.ingest.gateway import IngestGateway
from driftline.services.ingest.logic import Ingest
from driftline.entry.embedded import Embedded
from driftline.models import DEFAULT_RECIPE
from driftline.services.ingest.app import create_app
from driftline.timeutil import now_ms
from driftline.topics import ALL_TOPICS, FEATURES, LABELS
from driftline.training import train
from driftline.testing.served import ServedApp

MODEL = "failures"
CONTRACT = FeatureContract(numeric=("temperature", "vibration"), categorical=("line",))
DRIFTLINE = str(Path(sys.executable).with_name("driftline"))


def register_failure_model(app: Embedded) -> None:
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame({"temperature": rng.normal(70, 10, n), "vibration": rng.normal(0.3, 0.1, n),
                          "line": rng.choice(["press", "lathe", "mill"], n)})
    labels = np.where(frame["temperature"] + 50 * frame["vibration"] > 85, "1", "0")
    trained = train(DEFAULT_RECIPE, CONTRACT, frame, labels)
    version = app.registry.register(MODEL, trained.estimator, CONTRACT, actor="test", reason="test model",
                                    recipe=DEFAULT_RECIPE, profile=trained.profile)
    app.registry.set_alias(MODEL, "champion", version.version, actor="test", reason="first champion")


class ServedIngest:
    """An embedded app with the failure model, its ingest on a free 127.0.0.1 port, probes on its topics."""

    def __init__(self, settings, token: str | None = None, bus: MemoryBus | None = None):
        self.settings = settings
        self.app = Embedded(settings)
        register_failure_model(self.app)
        gateway = self.app.ingest
        if bus is not None:  # a bus of its own, whose only reader is the probe (the runners' groups hold none)
            bus.create_topics({topic: 3 for topic in ALL_TOPICS})
            gateway = IngestGateway(Ingest(self.app.contract_of, Bounds()), bus.producer(), self.app.codec,
                                    self.app.store)
        self.probes = {topic: (bus or self.app.bus).consumer(f"probe-{topic}", [topic]) for topic in (FEATURES, LABELS)}
        self.served = ServedApp(create_app(gateway, token=token))
        self.url = self.served.url

    def published(self, topic: str = FEATURES) -> list[dict]:
        out = []
        while batch := self.probes[topic].poll_batch(1000, 0.0):
            out.extend(self.app.codec.decode(topic, m.value) for m in batch)
            self.probes[topic].commit(next_offsets(batch))  # read: the bus may drop them
        return out

    def dead_letters(self) -> list[tuple[str, bytes, str]]:
        _, rows = self.app.store.query("SELECT topic, hex(payload), error FROM dead_letters FINAL ORDER BY received_at")
        return [(t, bytes.fromhex(p), e) for t, p, e in rows]

    def send(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, "DRIFTLINE_HOME": str(self.settings.home), "DRIFTLINE_URL": self.url,
                       **(env or {})}
        environment.pop("DRIFTLINE_INGEST_TOKEN", None) if "DRIFTLINE_INGEST_TOKEN" not in (env or {}) else None
        return subprocess.run([DRIFTLINE, "send", *args], capture_output=True, text=True, env=environment, timeout=120)

    def close(self) -> None:
        self.served.close()
        self.app.close()


@pytest.fixture
def served(settings):
    s = ServedIngest(settings)
    yield s
    s.close()


def counts(stdout: str) -> dict[str, int]:
    found = re.search(r"accepted ([\d,]+)\s+already accepted ([\d,]+).*rejected ([\d,]+)\s+unreadable lines ([\d,]+)",
                      stdout)
    assert found, stdout
    accepted, already, rejected, unreadable = (int(g.replace(",", "")) for g in found.groups())
    return {"accepted": accepted, "already": already, "rejected": rejected, "unreadable": unreadable}


def event_rows(n: int, start: int = 0) -> list[dict]:
    base = now_ms() - 3_600_000
    return [{"machine": f"m{i % 7}", "id": f"ev-{i}", "ts": base + i * 1000, "temperature": 60 + i % 30,
             "vibration": round(0.1 + (i % 10) / 20, 3), "line": ["press", "lathe", "mill", "drill"][i % 4]}
            for i in range(start, start + n)]


def test_a_csv_with_bad_rows_is_sent_and_the_printed_counts_are_what_reached_the_topic(served, tmp_path):
    rows = event_rows(250)
    frame = pd.DataFrame(rows)
    frame = frame.astype({"ts": object, "temperature": object, "vibration": object})
    frame.loc[3, "ts"] = pd.Timestamp(rows[3]["ts"], unit="ms", tz="UTC").isoformat()  # ISO-8601 works too
    frame.loc[10, "temperature"] = "hot"  # not a number: ingest rejects the row
    frame.loc[20, "ts"] = "yesterday"  # not a time
    frame.loc[30, "vibration"] = None  # a missing value: a required feature is absent
    frame["operator_note"] = "ok"  # not a feature of the model: not sent
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    with path.open("a") as f:
        f.write("too,few,cells\n")

    done = served.send("events", str(path), "--model", MODEL, "--id-column", "id", "--time-column", "ts",
                       "--entity-column", "machine", "--batch-size", "64")

    assert done.returncode == 1, done.stderr  # some rows were rejected
    printed = counts(done.stdout)
    published = served.published()
    dead = served.dead_letters()
    assert printed == {"accepted": 247, "already": 0, "rejected": 3, "unreadable": 1}
    assert len(published) == 247 and len(dead) == 3
    assert {e["event_id"] for e in published} == {f"ev-{i}" for i in range(250)} - {"ev-10", "ev-20", "ev-30"}
    event = next(e for e in published if e["event_id"] == "ev-5")
    assert event["entity_id"] == "m5" and event["numeric_features"] == {"temperature": 65.0, "vibration": 0.35}
    assert event["categorical_features"] == {"line": "lathe"}
    assert "operator_note" in done.stderr  # said once that it is not sent
    assert "dead_letters FINAL" in done.stdout and "line 12, event ev-10: numeric_features.temperature" in done.stdout
    assert "(not sent): 3 cells where the header has 7" in done.stdout
    # The SQL hint finds exactly the rejects of this run.
    query = re.search(r'driftline sql "(.*)"', done.stdout).group(1)
    _, rows_found = served.app.store.query(query)
    assert len(rows_found) == 3
    # Sending the same file again is harmless: every event already accepted, nothing published twice.
    again = served.send("events", str(path), "--model", MODEL, "--id-column", "id", "--time-column", "ts",
                        "--entity-column", "machine", "--quiet")
    assert counts(again.stdout) == {"accepted": 0, "already": 247, "rejected": 3, "unreadable": 1}
    assert served.published() == []


def test_json_lines_and_labels_reach_their_topics(served, tmp_path):
    rows = event_rows(40)
    events = tmp_path / "events.jsonl"
    lines = [json.dumps({**r, "model": MODEL, "event_id": r.pop("id"), "event_time": r.pop("ts")}) for r in rows]
    lines[5] = "{not json"
    lines[6] = json.dumps({**json.loads(lines[6]), "temperatur": 1.0})  # misspelled: not a feature, not sent
    events.write_text("\n".join(lines) + "\n")
    done = served.send("events", str(events), "--entity-column", "machine")
    assert counts(done.stdout) == {"accepted": 39, "already": 0, "rejected": 0, "unreadable": 1}
    assert len(served.published()) == 39 and served.dead_letters() == []
    assert "line 6 (not sent): not JSON" in done.stdout

    labels = tmp_path / "labels.csv"
    labels.write_text("event_id,failed\n" + "".join(f"ev-{i},{i % 2}\n" for i in range(10)) + "ev-11,\n")
    done = served.send("labels", str(labels), "--model", MODEL, "--label-column", "failed")
    assert counts(done.stdout) == {"accepted": 10, "already": 0, "rejected": 1, "unreadable": 0}
    published = served.published(LABELS)
    assert sorted((p["event_id"], p["label"]) for p in published) == [(f"ev-{i}", str(i % 2)) for i in range(10)]
    ((route, payload, error),) = served.dead_letters()
    assert route == "/v1/labels" and json.loads(payload)["event_id"] == "ev-11" and "label" in error


def test_without_a_champion_the_rejection_says_how_to_register_one(served, tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame(event_rows(3)).rename(columns={"id": "event_id"}).to_csv(path, index=False)
    done = served.send("events", str(path), "--model", "pumps", "--time-column", "ts")
    assert done.returncode == 1 and counts(done.stdout)["rejected"] == 3
    assert "driftline model register pumps --data FILE --target COL --champion" in done.stdout
    assert "no champion of model 'pumps'" in done.stderr


def test_a_full_bus_is_retried_until_every_event_is_accepted(settings, tmp_path):
    served = ServedIngest(settings, bus=MemoryBus(max_lag_bytes=6_000, retention_bytes=0))  # a few events a partition
    try:
        _send_through_a_full_bus(served, tmp_path)
    finally:
        served.close()


def _send_through_a_full_bus(served: ServedIngest, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pd.DataFrame(event_rows(600)).to_csv(path, index=False)
    drained: list[dict] = []
    stop = threading.Event()

    def consume() -> None:  # a downstream consumer that frees the bus as it reads
        while not stop.is_set():
            drained.extend(served.published())
            stop.wait(0.05)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        done = served.send("events", str(path), "--model", MODEL, "--id-column", "id", "--time-column", "ts",
                           "--batch-size", "300")
    finally:
        stop.set()
        reader.join()
    drained.extend(served.published())
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout) == {"accepted": 600, "already": 0, "rejected": 0, "unreadable": 0}
    assert sorted(e["event_id"] for e in drained) == sorted(f"ev-{i}" for i in range(600))
    # The bus did refuse some on the way (each refusal is in dead_letters), and the client retried them.
    refused = [error for _, _, error in served.dead_letters()]
    assert refused and all(e.startswith("(bus): the bus is full") for e in refused)


def test_the_token_is_sent_and_a_wrong_one_is_a_clear_error(settings, tmp_path):
    served = ServedIngest(settings, token="t0ken-for-ingest")
    try:
        path = tmp_path / "events.csv"
        pd.DataFrame(event_rows(5)).to_csv(path, index=False)
        args = ("events", str(path), "--model", MODEL, "--id-column", "id", "--time-column", "ts")
        refused = served.send(*args)
        assert refused.returncode == 1 and "401" in refused.stderr and "Traceback" not in refused.stderr
        wrong = served.send(*args, "--token", "nope")
        assert wrong.returncode == 1 and "DRIFTLINE_INGEST_TOKEN" in wrong.stderr
        assert served.published() == []
        done = served.send(*args, env={"DRIFTLINE_INGEST_TOKEN": "t0ken-for-ingest"})
        assert done.returncode == 0 and counts(done.stdout)["accepted"] == 5
        assert len(served.published()) == 5
    finally:
        served.close()


def test_bad_invocations_are_one_clear_line(served, tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame(event_rows(2)).to_csv(path, index=False)
    no_id = served.send("events", str(path), "--model", MODEL)
    assert no_id.returncode == 1 and "no column 'event_id'" in no_id.stderr and "--id-column" in no_id.stderr
    missing = served.send("events", str(tmp_path / "nope.csv"), "--model", MODEL)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    nowhere = served.send("events", str(path), "--model", MODEL, "--id-column", "id", "--url", "http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "cannot reach ingest" in nowhere.stderr
    for result in (no_id, missing, nowhere):
        assert "Traceback" not in result.stderr
