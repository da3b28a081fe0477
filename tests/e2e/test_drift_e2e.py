"""An abrupt covariate shift at event 50,000, end to end in embedded mode.

PSI on the shifted feature reaches the act band in the first window that lies
wholly after the shift; nothing asks for a retrain before it; the shift is one
incident: its first RetrainRequest, and a further attempt only after a
challenger of the incident was rejected (a covariate shift alone may not make a
challenger better than the champion).
"""

from driftline.codec import Codec
from driftline.config import Settings
from driftline.entry.demo import EPOCH_MS, EVENT_SPACING_MS, WINDOW_MS, DemoPlan, run_demo
from driftline.store import Store

SHIFT_AT = 50_000


def test_covariate_shift_is_detected_once_in_the_first_window_after_it(settings, monkeypatch):
    requests = []
    original = Codec.encode

    def spy(self, topic, record):  # every RetrainRequest that goes on the bus, as published
        if topic == "retrain":
            requests.append(record)
        return original(self, topic, record)

    monkeypatch.setattr(Codec, "encode", spy)
    plan = DemoPlan(events=100_000, drift_at=SHIFT_AT, concept_change=False)
    summary = run_demo(settings, plan, progress=False)
    assert summary["predictions"] == plan.events

    shift_ms = EPOCH_MS + SHIFT_AT * EVENT_SPACING_MS
    first_after = (shift_ms, shift_ms + WINDOW_MS)
    store = Store(Settings().resolved_store_dsn)
    try:
        _, rows = store.query(
            "SELECT feature, window_start, value FROM drift_metrics FINAL "
            "WHERE model_version = 1 AND kind = 'data' AND statistic = 'psi' ORDER BY window_start")
    finally:
        store.close()
    psi = {(feature, start): value for feature, start, value in rows}
    assert psi[("utilization", first_after[0])] >= 0.25
    before = [v for (f, start), v in psi.items() if start + WINDOW_MS <= shift_ms]
    assert len(before) > 50 and max(before) < 0.25  # quiet while nothing changed

    v1_requests = [r for r in requests if r["model_version"] == 1]
    assert len({r["incident_id"] for r in v1_requests}) == 1, v1_requests
    assert [r["attempt"] for r in v1_requests] == list(range(1, len(v1_requests) + 1))
    request = v1_requests[0]
    if len(v1_requests) > 1:  # each earlier attempt's challenger was rejected first
        store = Store(Settings().resolved_store_dsn)
        try:
            _, rejected = store.query("SELECT request_id FROM audit FINAL WHERE action = 'rejected'")
        finally:
            store.close()
        assert {r["request_id"] for r in v1_requests[:-1]} <= {row[0] for row in rejected}
    assert request["requested_at"] >= first_after[1]  # not before the first window wholly after the shift
    assert request["window_start"] >= shift_ms
    assert any(s["feature"] == "utilization" and s["window_start"] == first_after[0] for s in request["signals"])
