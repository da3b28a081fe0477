"""`driftline demo --events 100000` then `driftline sql`: exact counts, and a replay counts once."""

import json
import os
import subprocess
import sys

EVENTS = 50_000  # twice, plus a fresh 20,000-event story: the CI budget


def driftline(home, *args):
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "driftline.entry.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    return done.stdout


def count(home, sql):
    rows = json.loads(driftline(home, "sql", sql, "--format", "json"))
    return list(rows[0].values())[0]


def test_demo_counts_every_prediction_and_join_once_even_when_replayed(tmp_path):
    home = tmp_path / "home"
    summary = json.loads(driftline(home, "demo", "--events", str(EVENTS), "--json"))
    assert summary["events"] == EVENTS and summary["events_per_s"] > 0
    predictions = "SELECT count() FROM predictions FINAL WHERE role = 'champion'"
    joined = "SELECT count() FROM labels FINAL WHERE status = 'joined'"
    assert count(home, predictions) == EVENTS
    assert count(home, joined) == summary["labels_sent"] > 0.8 * EVENTS

    replay = json.loads(driftline(home, "demo", "--events", str(EVENTS), "--json", "--keep"))  # the same input again
    assert replay["labels_sent"] == summary["labels_sent"]
    assert count(home, predictions) == EVENTS
    assert count(home, joined) == summary["labels_sent"]
    assert count(home, "SELECT count(DISTINCT event_id) FROM predictions") == EVENTS

    fresh = json.loads(driftline(home, "demo", "--events", "20000", "--json"))  # without --keep: a new story
    assert fresh["champion_version"] == 2 and fresh["retrain_requests"] == 1
    assert count(home, predictions) == 20_000


def test_the_demo_leaves_a_home_with_foreign_files_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "driftline.entry.cli", "demo", "--events", "1000"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "not resetting" in done.stderr
    assert (home / "notes.txt").read_text() == "mine"


def test_the_demo_with_no_arguments_retrains_promotes_v2_and_recovers(tmp_path):
    summary = json.loads(driftline(tmp_path / "home", "demo", "--json", "--report", str(tmp_path / "report.html")))
    assert summary["events"] == 200_000
    assert summary["champion_version"] == 2
    assert summary["retrain_requests"] == 1
    assert summary["accuracy_during_drift"] < 0.8 * summary["accuracy_pre_drift"]  # the drift hurt
    assert summary["accuracy_after_retrain"] >= 0.95 * summary["accuracy_pre_drift"]  # and v2 healed it
    assert 0 < summary["detection_delay_events"] < 20_000
    assert summary["drift_onset_to_promotion_s"] > 0
    assert (tmp_path / "report.html").stat().st_size > 10_000
