"""The retrainer's failures the way a user meets them (issue 10): subprocesses, real files, real HTTP.

A model of our own, not the demo's credit data: a pump's health (``ok`` /
``fault``) from its bearing temperature, vibration and site, registered with
``driftline model register``; events and labels are posted to ``driftline up``
over HTTP as a client would.

- Labels of one class after a shift: under ``driftline up``, the drift-detector
  asks for a retrain; the request's outcome is ``failed`` with the reason in the
  audit log (``GET /v1/audit``); the service keeps running and a later request,
  on labels of both classes, is promoted or rejected.
- A training past ``DRIFTLINE_RETRAIN_TIMEOUT_S``: a champion of a trusted type of
  our own whose ``fit`` sleeps; ``failed: timed out after 2 s``, up stays healthy.
- kill -9 after registering a challenger, before anything is committed: an
  embedded pipeline in a subprocess (``retrain_kill_driver.py``) SIGKILLs itself
  at the first alias move; restarted, it completes the decision with exactly one
  version for the request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from driftline.registry import Registry

from test_up import Up, free_port, wait_for

BIN = Path(sys.executable).parent
DRIVER = Path(__file__).with_name("retrain_kill_driver.py")
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPACING_MS = 10  # one event every 10 ms of event time
PHASE = 2000  # events per phase; drift windows of 10 s hold 1,000 events
TOKEN = "retrain-failures-registry-token"
MODEL = "pump"


def pump_table(n: int, seed: int, *, hot: bool = False, only: str | None = None) -> pd.DataFrame:
    """A pump's readings and health; ``hot`` reads 25 degrees more (a recalibrated sensor), same concept relative to it."""
    rng = np.random.default_rng(seed)
    offset = 25.0 if hot else 0.0
    frame = pd.DataFrame({"bearing_temp": rng.normal(60, 8, n) + offset, "vibration_mm_s": rng.gamma(2.0, 1.5, n),
                          "site": rng.choice(["north", "south", "east"], n)})
    fault = (frame["bearing_temp"] - 60 - offset) / 8 + (frame["vibration_mm_s"] - 3) > 0.5
    frame["status"] = np.where(fault, "fault", "ok") if only is None else only
    return frame


def driftline(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "driftline"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"driftline {' '.join(args)}: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def user_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({"DRIFTLINE_HOME": str(tmp_path / "home"), "DRIFTLINE_REGISTRY_TOKEN": TOKEN,
                "DRIFTLINE_PARTITIONS": "1", "DRIFTLINE_RETRAIN_MIN_ROWS": "500",
                # phases of 2,000 events: retrain on what arrived, not on the champion's training size
                "DRIFTLINE_RETRAIN_FLOOR_SHARE": "0", **settings})
    return env


def register_champion(env: dict, tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    pump_table(4000, seed=1).to_csv(train, index=False)
    registered = driftline(env, "model", "register", MODEL, "--data", str(train), "--target", "status", "--champion",
                           "--reason", "first model, from train.csv")
    assert "champion" in registered.stdout


def send_phase(url: str, index: int, frame: pd.DataFrame) -> None:
    """Events of phase ``index`` then their labels, as a client posts them (POST /v1/events, /v1/labels)."""
    first = index * PHASE
    ids = [f"pump-{first + i:06d}" for i in range(len(frame))]
    times = (EPOCH_MS + (first + np.arange(len(frame))) * SPACING_MS).tolist()
    rows = frame.to_dict("records")
    events = [{"model": MODEL, "event_id": i, "entity_id": i, "event_time": t,
               "numeric_features": {"bearing_temp": r["bearing_temp"], "vibration_mm_s": r["vibration_mm_s"]},
               "categorical_features": {"site": r["site"]}} for i, t, r in zip(ids, times, rows)]
    labels = [{"model": MODEL, "event_id": i, "label": r["status"], "label_time": t + 60_000}
              for i, t, r in zip(ids, times, rows)]
    for path, records in (("/v1/events", events), ("/v1/labels", labels)):
        for batch in range(0, len(records), 1000):
            response = httpx.post(url + path, json=records[batch:batch + 1000], timeout=60)
            assert response.status_code == 200 and response.json()["accepted"] == len(records[batch:batch + 1000]), \
                response.text[:2000]


def audit(up: Up) -> list[dict]:
    response = httpx.get(up.url + "/v1/audit", params={"model": MODEL},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def by_retrainer(rows: list[dict], *actions: str) -> list[dict]:
    return [r for r in rows if r["actor"] == "retrainer" and r["action"] in actions]


@pytest.mark.timeout(900)
def test_labels_of_one_class_fail_the_request_and_a_later_request_is_served(tmp_path):
    env = user_env(tmp_path, DRIFTLINE_DRIFT_WINDOW_SIZE="10000", DRIFTLINE_DRIFT_COOLDOWN_MS="0")
    register_champion(env, tmp_path)
    up = Up(env, free_port(), tmp_path / "up.log")
    env["DRIFTLINE_URL"] = up.url
    try:
        send_phase(up.url, 0, pump_table(PHASE, seed=2))
        # The sensor reads hot, and every label says "ok": the drift asks for a retrain on one class.
        send_phase(up.url, 1, pump_table(PHASE, seed=3, hot=True, only="ok"))
        failed = wait_for(lambda: by_retrainer(audit(up), "retrain_failed"), 300, "a failed retrain request", every_s=1)
        assert up.process.poll() is None  # before the fix: the retrainer stopped here, and again on every restart
        reason = failed[0]["reason"]
        assert "failed: the" in reason and "training rows hold one class only (ok)" in reason, reason
        assert failed[0]["version"] == 1  # recorded on the champion
        card = driftline(env, "model", "card", MODEL, "1").stdout  # the champion's history, as a user reads it
        assert "retrain_failed" in card and "hold one class only (ok)" in card

        # Normal readings end the incident; hot ones with labels of both classes start another.
        send_phase(up.url, 2, pump_table(PHASE, seed=4))
        send_phase(up.url, 3, pump_table(PHASE, seed=5, hot=True))
        served = wait_for(lambda: by_retrainer(audit(up), "rejected") or [
            r for r in by_retrainer(audit(up), "alias_moved") if r["alias"] == "champion"], 300,
            "a later request promoted or rejected", every_s=1)
        version = served[0]["version"]
        shown = json.loads(driftline(env, "model", "show", MODEL, str(version), "--json").stdout)
        later = shown["lineage"]["retrain_request"]["request_id"]
        failed_requests = {r["reason"].split()[1] for r in by_retrainer(audit(up), "retrain_failed")}
        assert later not in failed_requests
        # every failure so far is the one-class one: nothing else went wrong on the way
        assert all("one class only" in r["reason"] for r in by_retrainer(audit(up), "retrain_failed"))
        assert up.process.poll() is None
    finally:
        assert up.stop(signal.SIGINT) == 0  # checkpoint and exit 0


SLEEPY = textwrap.dedent('''
    """A classifier of our own whose fit sleeps: a training that outlives the retrainer's timeout."""
    import time

    from sklearn.linear_model import LogisticRegression


    class SleepyClassifier(LogisticRegression):
        def __init__(self, fit_sleep_s=0.0, C=1.0, max_iter=500):
            super().__init__(C=C, max_iter=max_iter)
            self.fit_sleep_s = fit_sleep_s

        def fit(self, X, y, sample_weight=None):
            time.sleep(self.fit_sleep_s)
            return super().fit(X, y, sample_weight)
''')


def sleepy_artifact(tmp_path: Path) -> tuple[Path, Path]:
    """A skops pipeline around SleepyClassifier (fitted quickly, then told to sleep 60 s in every later fit)."""
    (tmp_path / "sleepy_pump.py").write_text(SLEEPY)
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import pandas as pd, skops.io as sio
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
        from sleepy_pump import SleepyClassifier
        frame = pd.read_csv({str(tmp_path / "train.csv")!r})
        pipeline = Pipeline([
            ("columns", ColumnTransformer([("numbers", StandardScaler(), ["bearing_temp", "vibration_mm_s"]),
                                           ("site", OneHotEncoder(handle_unknown="ignore"), ["site"])])),
            ("model", SleepyClassifier())])
        pipeline.fit(frame.drop(columns=["status"]), frame["status"])
        pipeline.set_params(model__fit_sleep_s=60.0)
        sio.dump(pipeline, {str(tmp_path / "sleepy.skops")!r})
    ''')
    pump_table(4000, seed=1).to_csv(tmp_path / "train.csv", index=False)
    pump_table(1000, seed=9).to_csv(tmp_path / "reference.csv", index=False)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    return tmp_path / "sleepy.skops", tmp_path / "reference.csv"


@pytest.mark.timeout(900)
def test_a_training_past_the_timeout_is_failed_and_up_goes_on(tmp_path):
    artifact, reference = sleepy_artifact(tmp_path)
    env = user_env(tmp_path, DRIFTLINE_DRIFT_WINDOW_SIZE="10000", DRIFTLINE_DRIFT_COOLDOWN_MS="0",
                   DRIFTLINE_RETRAIN_TIMEOUT_S="2", DRIFTLINE_TRUSTED_TYPES='["sleepy_pump.SleepyClassifier"]',
                   PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    driftline(env, "model", "register", MODEL, "--artifact", str(artifact), "--reference", str(reference),
              "--target", "status", "--champion", "--reason", "trained by the maintenance team")
    up = Up(env, free_port(), tmp_path / "up.log")
    env["DRIFTLINE_URL"] = up.url
    try:
        send_phase(up.url, 0, pump_table(PHASE, seed=2))
        send_phase(up.url, 1, pump_table(PHASE, seed=3, hot=True))
        failed = wait_for(lambda: by_retrainer(audit(up), "retrain_failed"), 300, "a timed-out retrain", every_s=1)
        assert "failed: timed out after 2 s (retrain_timeout_s)" in failed[0]["reason"], failed[0]
        assert up.process.poll() is None and httpx.get(up.url + "/healthz", timeout=10).status_code == 200
        # The service goes on: the next incident's request is served too (and times out the same way).
        send_phase(up.url, 2, pump_table(PHASE, seed=4))
        send_phase(up.url, 3, pump_table(PHASE, seed=5, hot=True))
        every_event = "SELECT count() FROM predictions FINAL WHERE model = 'pump' AND role = 'champion'"
        wait_for(lambda: json.loads(driftline(env, "sql", every_event, "--format", "json").stdout)[0]["count()"]
                 == 4 * PHASE, 300, "every event scored", every_s=1)
        later = wait_for(lambda: [r for r in by_retrainer(audit(up), "retrain_failed")
                                  if r["reason"].split()[1] != failed[0]["reason"].split()[1]], 300,
                         "a later request served", every_s=1)
        assert "timed out after 2 s" in later[0]["reason"]
        assert json.loads(driftline(env, "model", "list", "--json").stdout)[0]["aliases"] == {"champion": 1}
    finally:
        assert up.stop(signal.SIGINT) == 0


def run_driver(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), *args], env=env, capture_output=True, text=True, timeout=300)


def versions_for(registry: Registry, request_id: str) -> list[int]:
    return [v.version for v in registry.versions(MODEL)
            if (v.lineage.get("retrain_request") or {}).get("request_id") == request_id]


@pytest.mark.timeout(600)
def test_kill_9_after_registering_a_challenger_then_restart_keeps_one_version(tmp_path):
    env = user_env(tmp_path)
    home = Path(env["DRIFTLINE_HOME"])
    register_champion(env, tmp_path)
    live = pump_table(1500, seed=6, hot=True)  # the concept moved with the sensor: a challenger wins
    live.insert(0, "event_time", EPOCH_MS + np.arange(len(live)) * SPACING_MS)
    live.insert(0, "event_id", [f"pump-{i:06d}" for i in range(len(live))])
    live.drop(columns=["status"]).to_csv(tmp_path / "events.csv", index=False)
    live[["event_id", "status"]].to_csv(tmp_path / "labels.csv", index=False)
    streamed = run_driver(env, "stream", str(tmp_path / "events.csv"), str(tmp_path / "labels.csv"))
    assert streamed.returncode == 0, streamed.stderr[-3000:]

    killed = run_driver(env, "request", "incident-1", str(EPOCH_MS), "--kill-after-register")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    registry = Registry(home / "registry")
    try:
        assert versions_for(registry, "incident-1") == [2]  # registered, then killed
        assert registry.aliases(MODEL) == {"champion": 1}
    finally:
        registry.close()

    resumed = run_driver(env, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (outcome,) = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert outcome["request_id"] == "incident-1" and outcome["version"] == 2 and outcome["replayed"]
    assert outcome["outcome"] == "promoted", outcome

    again = run_driver(env, "resume")  # nothing left to do: committed, and done in the state
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == []
    registry = Registry(home / "registry")
    try:
        assert versions_for(registry, "incident-1") == [2] and len(registry.versions(MODEL)) == 2
        assert registry.aliases(MODEL) == {"champion": 2, "challenger": 2}
        registered = [r for r in registry.audit_log(MODEL) if r["action"] == "registered" and r["version"] == 2]
        moves = [r for r in registry.audit_log(MODEL) if r["action"] == "alias_moved" and r["version"] == 2]
        assert len(registered) == 1 and sorted(r["alias"] for r in moves) == ["challenger", "champion"]
    finally:
        registry.close()
