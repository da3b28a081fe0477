"""A driftline pipeline in embedded mode, persistent under DRIFTLINE_HOME, driven by test_retrain_failures.py.

    python retrain_kill_driver.py stream EVENTS.csv LABELS.csv   # ingest a pump's events and labels, pump
    python retrain_kill_driver.py request REQUEST_ID WINDOW_START_MS [--kill-after-register]
    python retrain_kill_driver.py resume                           # restart: pump what was left

``request`` publishes a retrain request on the ``retrain`` topic, as the
drift-detector would, and pumps. With ``--kill-after-register`` the process
sends itself SIGKILL at the retrainer's first alias move: the challenger is
registered, nothing after it (aliases, offsets, state) is. Each command prints
the retrainer's outcomes as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pandas as pd

from driftline.config import Settings
from driftline.entry.embedded import Embedded
from driftline.timeutil import now_ms
from driftline.topics import FEATURES, LABELS, RETRAIN

MODEL = "pump"


def retrainer_of(app: Embedded):
    return next(r.service for r in app.runners if r.service.name == "retrainer")


def stream(app: Embedded, events_csv: str, labels_csv: str) -> None:
    events = pd.read_csv(events_csv)
    features = [c for c in events.columns if c not in ("event_id", "event_time")]
    numeric = [c for c in features if c != "site"]
    app.ingest.submit(FEATURES, [
        {"model": MODEL, "event_id": row["event_id"], "entity_id": row["event_id"], "event_time": int(row["event_time"]),
         "numeric_features": {c: float(row[c]) for c in numeric}, "categorical_features": {"site": str(row["site"])}}
        for row in events.to_dict("records")])
    app.pump()
    labels = pd.read_csv(labels_csv)
    app.ingest.submit(LABELS, [{"model": MODEL, "event_id": row["event_id"], "label": str(row["status"]),
                                "label_time": now_ms()} for row in labels.to_dict("records")])
    app.pump()


def request(app: Embedded, request_id: str, window_start_ms: int, kill_after_register: bool) -> None:
    if kill_after_register:
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9, right after the challenger was registered

        app.registry.set_alias = killed
    record = {"request_id": request_id, "model": MODEL, "model_version": 1, "reason": "test: concept drift",
              "signals": [], "window_start": window_start_ms, "window_end": window_start_ms + 1,
              "requested_at": now_ms()}
    producer = app.bus.producer()
    producer.produce(RETRAIN, app.codec.encode(RETRAIN, record), key=MODEL.encode())
    producer.flush()
    app.pump()


def main(argv: list[str]) -> int:
    # The in-process schema registry numbers schemas in one fixed order (Codec), so a restarted
    # process reads what a killed one left on the persistent bus.
    app = Embedded(Settings(), persistent=True)
    try:
        if argv[0] == "stream":
            stream(app, argv[1], argv[2])
        elif argv[0] == "request":
            request(app, argv[1], int(argv[2]), "--kill-after-register" in argv)
        elif argv[0] == "resume":
            app.pump()
        app.checkpoint()
        print(json.dumps(retrainer_of(app).outcomes))
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
