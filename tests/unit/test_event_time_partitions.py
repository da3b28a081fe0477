"""Event time in the embedded mode: with 1, 3 and 12 partitions of ``predictions``, every event is in
a PSI window's ``n`` or in its window's ``late_events``; in-order producers give no late events with
the default settings; an out-of-order producer's late events are rows; far-future events written
straight to the topic neither blind PSI nor vanish."""

import numpy as np
import pytest

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.entry.wiring import Context, make_runner
from driftline.testing.event_time import (END_OF_TIME_MS, FAR_AHEAD_MS, SPACING_MS, T0, WINDOW_MS, ProfileRegistry,
                                          check_every_event_counted, closed_windows, drain, predictions, produce,
                                          window_rows)
from driftline.topics import ALL_TOPICS

N = 6_000  # 120 s of event time: 12 windows of 500 events


def deployment(settings, store, partitions):
    settings = settings.model_copy(update={"partitions": partitions, "drift_window_size": WINDOW_MS,
                                           "batch_size": 400})
    assert settings.drift_allowed_lateness_ms > 0  # the default
    bus = MemoryBus(retention_bytes=256 << 20)
    bus.create_topics({t: partitions for t in ALL_TOPICS})
    codec = Codec(registry_client(None))
    runner = make_runner("drift-detector", Context(settings, bus, codec, store, ProfileRegistry()))
    return settings, bus, codec, runner


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_every_event_is_in_a_window_or_counted_late(settings, store, partitions):
    settings, bus, codec, runner = deployment(settings, store, partitions)
    lateness = settings.drift_allowed_lateness_ms
    ids = np.arange(N)
    times = T0 + ids * SPACING_MS
    produce(bus, codec, predictions(ids, times))
    drain(runner, N)
    rows = window_rows(store)
    closed = closed_windows(ids, times, partitions, lateness)
    assert len(closed) >= 5
    assert check_every_event_counted(rows, times, closed) == 500 * len(closed)
    assert rows.late == {} and rows.ahead == {}  # in-order producers, default settings: nothing late

    # An out-of-order producer: 300 events of the first three windows, long after they closed.
    late_ids = np.arange(N, N + 300)
    late_times = T0 + (late_ids - N) * 100
    produce(bus, codec, predictions(late_ids, late_times))
    drain(runner, N + 300)
    rows = window_rows(store)
    assert sum(rows.late.values()) == 300 and set(rows.late) == {(T0 + k * WINDOW_MS, T0 + (k + 1) * WINDOW_MS)
                                                                 for k in range(3)}
    check_every_event_counted(rows, np.concatenate([times, late_times]), closed)
    runner.close()


@pytest.mark.parametrize("partitions", [1, 3])
def test_far_future_events_written_to_the_topic_do_not_blind_psi(settings, store, partitions):
    settings, bus, codec, runner = deployment(settings, store, partitions)
    n = 10_000  # 200 s: windows more than the allowed lateness after the far-future batch close
    ids = np.arange(n)
    times = T0 + ids * SPACING_MS
    half = n // 2
    far_ids = np.arange(n, n + 1_001)
    far_times = np.concatenate([times[half] + FAR_AHEAD_MS + np.arange(1_000), [END_OF_TIME_MS]])
    produce(bus, codec, predictions(ids[:half], times[:half]))
    produce(bus, codec, predictions(far_ids, far_times))  # a batch 58 days ahead and one at 9999-12-31
    produce(bus, codec, predictions(ids[half:], times[half:]))
    drain(runner, n + 1_001)
    rows = window_rows(store)
    closed = closed_windows(ids, times, partitions, settings.drift_allowed_lateness_ms)
    check_every_event_counted(rows, times, closed)
    # Windows after the far-future batch kept closing and being written ...
    assert max(start for start, _ in rows.psi) >= times[half] + WINDOW_MS
    # ... and the far-future events are counted, in windows of their own that stay open.
    assert sum(rows.ahead.values()) == 1_001 and rows.late == {}
    assert all(start >= times[half] + FAR_AHEAD_MS for start, _ in rows.ahead)
    runner.close()


def test_a_concept_detection_names_the_event_time_partition_and_offset_of_the_record_that_fired(store):
    from driftline.bus.base import Message
    from driftline.drift import AlertPolicy, WindowSpec
    from driftline.runner import Incoming
    from driftline.services.drift_detector.logic import DriftDetector
    from driftline.services.drift_detector.service import DriftDetectorService
    from driftline.testing.event_time import MODEL, reference_profile
    from driftline.topics import DRIFT, LABELED

    service = DriftDetectorService(DriftDetector(lambda m, v: reference_profile(), WindowSpec(size=10_000),
                                                 AlertPolicy()))
    rng = np.random.default_rng(5)
    errors = np.concatenate([rng.random(2_000) < 0.05, rng.random(2_000) < 0.6]).astype(float)
    batch = [Incoming(LABELED, {"model": MODEL, "event_id": f"l{i}", "model_version": 1, "role": "champion",
                                "error": float(e), "event_time": T0 + i * SPACING_MS,
                                "label_time": T0 + i * SPACING_MS + 7},
                      Message(LABELED, i % 3, 1_000 + i // 3, None, b"", 0))
             for i, e in enumerate(errors)]
    out = service.handle(batch, now_ms=T0)
    signals = [r for t, _, r in out.records if t == DRIFT and r["kind"] == "concept"]
    assert signals
    for s in signals:
        i = s["stream_index"]
        assert i >= 2_000  # the change, not before it
        assert s["event_time"] == s["window_start"] == s["window_end"] == T0 + i * SPACING_MS
        assert (s["partition"], s["offset"]) == (i % 3, 1_000 + i // 3)
    rows = [r for r in out.rows["drift_metrics"] if r["kind"] == "concept"]
    assert [(r["stream_index"], r["partition"], r["offset"]) for r in rows] == [
        (s["stream_index"], s["partition"], s["offset"]) for s in signals]
    assert all(r["event_time"].year == 2026 for r in rows)  # the service writes a datetime
    # The signal is a valid DriftSignal on the wire, and the row a valid drift_metrics row.
    from driftline.codec import Codec, registry_client

    codec = Codec(registry_client(None))
    assert codec.decode(DRIFT, codec.encode(DRIFT, signals[0]))["offset"] == signals[0]["offset"]
    store.insert("drift_metrics", out.rows["drift_metrics"])
    assert store.scalar("SELECT count() FROM drift_metrics WHERE kind = 'concept' AND offset IS NOT NULL") == len(rows)
