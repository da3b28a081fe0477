"""``driftline up`` over HTTP vs the embedded pipeline without HTTP, in the same run.

Both score the same credit events with the same first model. The HTTP side is a
real ``driftline up`` subprocess: events are POSTed in batches of 1,000 by one
client; *accepted* is events/s until the last POST is answered, *scored* is
events/s until the store (read through up's store endpoint) holds a prediction for
every event. The baseline is :class:`Embedded` driven in-process the way the demo
drives it: ``ingest.submit`` then ``pump`` per chunk, no HTTP and no background thread.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import report
from driftline.config import Settings
from driftline.entry.demo import feature_events, train_first_model
from driftline.entry.embedded import Embedded
from driftline.entry.scenario import MODEL, CreditScenario
from driftline.topics import FEATURES

EVENTS = int(os.environ.get("BENCH_UP_EVENTS", "20000"))
CHUNK = 1000
COUNT = f"SELECT count() FROM predictions FINAL WHERE model = '{MODEL}' AND role = 'champion'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_events_per_s(events: list[dict], home: Path) -> float:
    app = Embedded(Settings(home=home))
    try:
        train_first_model(app, CreditScenario())
        started = time.perf_counter()
        for start in range(0, len(events), CHUNK):
            app.ingest.submit(FEATURES, events[start:start + CHUNK])
            app.pump()
        elapsed = time.perf_counter() - started
        assert app.store.scalar(COUNT) == len(events)
        return len(events) / elapsed
    finally:
        app.close()


def up_events_per_s(events: list[dict], home: Path) -> tuple[float, float]:
    from driftline.store import Store

    # The first model is registered before up starts (SQLite registry), exactly as the demo trains it.
    seed = Embedded(Settings(home=home))
    try:
        train_first_model(seed, CreditScenario())
    finally:
        seed.close()
    port = _free_port()
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    env.pop("DRIFTLINE_STORE_DSN", None)
    up = subprocess.Popen([sys.executable, "-m", "driftline.entry.cli", "up", "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or up.poll() is not None:
                raise RuntimeError("driftline up did not start")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=120) as client:
            started = time.perf_counter()
            for start in range(0, len(events), CHUNK):
                response = client.post("/v1/events", json=events[start:start + CHUNK])
                response.raise_for_status()
            accepted_s = time.perf_counter() - started
        store = Store(Settings(home=home).resolved_store_dsn, credentials_file=home / "store-credentials.json")
        try:
            while store.scalar(COUNT) < len(events):
                if time.perf_counter() - started > 600:
                    raise RuntimeError("driftline up did not score every event within 600 s")
                time.sleep(0.1)
            scored_s = time.perf_counter() - started
        finally:
            store.close()
        return len(events) / accepted_s, len(events) / scored_s
    finally:
        up.terminate()
        up.wait(timeout=120)


def run() -> dict:
    events = feature_events(CreditScenario().generate(0, EVENTS))
    with tempfile.TemporaryDirectory() as embedded_home, tempfile.TemporaryDirectory() as up_home:
        baseline = embedded_events_per_s(events, Path(embedded_home))
        accepted, scored = up_events_per_s(events, Path(up_home))
    return report("up_http", events=EVENTS, up_accepted_events_per_s=round(accepted),
                  up_scored_events_per_s=round(scored), embedded_events_per_s=round(baseline),
                  ratio=round(scored / baseline, 3))
