"""Event-time watermarks over partitions (idle partitions, skew, jumps, snapshot/restore) and the
counter's external watermark: late events counted per window, never dropped silently."""

import json

import numpy as np
import pytest

from driftline.drift import EventCounts, WindowedProfileCounter, WindowSpec
from driftline.drift.profile import SCORE, ReferenceProfile
from driftline.drift.watermark import PartitionWatermarks

WALL = 1_800_000_000_000  # wall clock of the tests (2027): every event time below is before it
SKEW, IDLE = 10_000, 60_000


def arr(*values):
    return np.array(values, dtype=np.int64)


def test_the_watermark_is_the_minimum_over_partitions_and_never_goes_back():
    wm = PartitionWatermarks(SKEW, IDLE)
    assert wm.current(WALL) is None
    wm.observe(arr(0, 1, 2), arr(5_000, 3_000, 4_000), WALL)
    assert wm.current(WALL) == 3_000
    wm.observe(arr(1, 1), arr(9_000, 2_000), WALL)  # partition 1 moves on; an old event never moves it back
    assert wm.partitions == {0: 5_000, 1: 9_000, 2: 4_000}
    assert wm.current(WALL) == 4_000


def test_a_declared_partition_holds_the_watermark_until_it_delivers_or_is_idle():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.expect([0, 1], WALL)
    wm.observe(arr(0), arr(50_000), WALL)
    assert wm.current(WALL) is None  # partition 1 has said nothing yet
    wm.observe(arr(0), arr(50_500), WALL + IDLE // 2)
    assert wm.current(WALL + IDLE - 1) is None
    wm.observe(arr(0), arr(51_000), WALL + IDLE)
    assert wm.current(WALL + IDLE) == 51_000  # partition 1 idle: left out


def test_an_idle_partition_is_left_out_and_when_all_are_idle_the_watermark_is_their_maximum():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.observe(arr(0, 1), arr(1_000, 8_000), WALL)
    assert wm.current(WALL) == 1_000
    wm.observe(arr(1), arr(9_000), WALL + 30_000)
    assert wm.current(WALL + IDLE) == 9_000  # partition 0 idle since WALL
    assert wm.current(WALL + 30_000 + IDLE) == 9_000  # both idle: the maximum
    # Partition 0 wakes up behind: the watermark stays where it was.
    wm.observe(arr(0), arr(2_000), WALL + 100_000)
    assert wm.current(WALL + 100_000) == 9_000


def test_an_event_far_ahead_cannot_move_the_watermark_and_is_flagged():
    wm = PartitionWatermarks(SKEW, IDLE)
    ahead = wm.observe(arr(0, 0, 0, 1), arr(1_000, 1_000 + SKEW + 1, 2_000, 1_500), WALL)
    assert ahead.tolist() == [False, True, False, False]
    assert wm.partitions == {0: 2_000, 1: 1_500} and wm.ahead_events == 1
    # A partition's first event is compared with the most advanced partition.
    assert wm.observe(arr(2), arr(2_000 + SKEW + 1), WALL).tolist() == [True]
    # Beyond the wall clock plus the skew: ahead whatever the partitions say (here: 9999-12-31).
    fresh = PartitionWatermarks(SKEW, IDLE)
    assert fresh.observe(arr(0, 0), arr(253_402_214_399_000, 1_000), WALL).tolist() == [True, False]
    assert fresh.current(WALL) == 1_000


def test_a_burst_ahead_then_normal_events_never_jumps_but_a_sustained_run_is_followed():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.observe(arr(0), arr(1_000), WALL)
    far = 1_000 + 58 * 86_400_000
    burst = wm.observe(np.zeros(1000, dtype=np.int64), far + np.arange(1000), WALL)
    assert burst.all() and wm.partitions == {0: 1_000}
    wm.observe(arr(0), arr(1_100), WALL + 1_000)  # the normal stream goes on: the run is broken
    assert wm.observe(arr(0), arr(far), WALL + IDLE + 5_000).tolist() == [True]
    assert wm.jumps == 0 and wm.current(WALL + IDLE) == 1_100
    # A producer back after a long gap: every event of the partition stays ahead for the idle
    # timeout of wall time: the partition has moved on, and its watermark follows.
    later = wm.observe(arr(0), arr(far + 10), WALL + 2 * IDLE + 5_000)
    assert wm.jumps == 1 and later.tolist() == [False]
    assert wm.partitions == {0: far + 10}


def test_a_jump_never_goes_beyond_the_wall_clock_plus_the_skew():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.observe(arr(0), arr(1_000), WALL)
    beyond = WALL + 1_000 * IDLE
    for k in range(5):  # far beyond the wall clock for minutes: never followed
        assert wm.observe(arr(0), arr(beyond + k), WALL + k * IDLE).tolist() == [True]
    assert wm.jumps == 0 and wm.partitions == {0: 1_000}


def test_snapshot_restore_resumes_the_same_watermarks_and_runs():
    def feed(wm, start, stop):
        out = []
        for k in range(start, stop):
            out += wm.observe(arr(k % 3, k % 3), arr(1_000 * k, 1_000 * k + (SKEW * 100 if k == 7 else 0)),
                              WALL + k * 1_000).tolist()
        return out, wm.current(WALL + stop * 1_000), wm.partitions, wm.ahead_events

    whole = feed(PartitionWatermarks(SKEW, IDLE), 0, 20)
    first = PartitionWatermarks(SKEW, IDLE)
    a = feed(first, 0, 9)
    second = PartitionWatermarks(SKEW, IDLE)
    second.restore(json.loads(json.dumps(first.snapshot())))
    b = feed(second, 9, 20)
    assert a[0] + b[0] == whole[0] and b[1:] == whole[1:]
    with pytest.raises(ValueError):
        second.restore({"format": 99})


def test_the_in_order_case_is_vectorized():
    """100,000 in-order events over 12 partitions in one call: no event-by-event path taken."""
    wm = PartitionWatermarks(SKEW, IDLE)
    t = 1_000 + np.arange(100_000, dtype=np.int64) * 10
    parts = np.arange(100_000, dtype=np.int64) % 12
    wm._observe_slowly = None  # would raise if called
    assert not wm.observe(parts, t, WALL).any()
    assert wm.current(WALL) == int(t[-12])


# --------------------------------------------------------------------------- the counter


def profile():
    rng = np.random.default_rng(0)
    return ReferenceProfile.fit(numeric={"flow_lpm": rng.normal(size=2_000)}, score=rng.uniform(size=2_000))


def cols(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"flow_lpm": rng.normal(size=n), SCORE: rng.uniform(size=n)}


@pytest.mark.parametrize("spec", [WindowSpec("tumbling", "time", size=1_000, allowed_lateness=200),
                                  WindowSpec("hopping", "time", size=1_000, step=500, allowed_lateness=0)])
def test_with_an_outside_watermark_every_event_is_in_a_window_or_counted_late(spec):
    counter = WindowedProfileCounter(profile(), spec)
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 20_000, 4_000)) - rng.integers(0, 3_000, 4_000) * (rng.random(4_000) < 0.1)
    closed, late = [], {}
    watermark = None
    for a in range(0, t.size, 250):
        batch = t[a:a + 250]
        closed += counter.update(cols(batch.size, a), batch, watermark=watermark)
        watermark = int(batch.max()) if watermark is None else max(watermark, int(batch.max()))
        closed += counter.advance(watermark)
        late.update({(c.start, c.end): c.late_events for c in counter.take_event_counts()})
    closed += counter.flush()
    per = -(-spec.size // spec.hop)
    windows_of = {}  # every (event, window) pair lands in a window's n or its late count
    for x in t.tolist():
        for j in range(per):
            k = x // spec.hop - j
            if k * spec.hop + spec.size > x:
                windows_of[(k * spec.hop, k * spec.hop + spec.size)] = windows_of.get((k * spec.hop, k * spec.hop + spec.size), 0) + 1
    got = {(w.start, w.end): w.n for w in closed}
    assert counter.late_events > 0
    assert {w: got.get(w, 0) + late.get(w, 0) for w in windows_of} == windows_of
    assert sum(late.values()) >= counter.late_events


def test_ahead_events_stay_in_their_own_window_until_the_watermark_gets_there():
    counter = WindowedProfileCounter(profile(), WindowSpec("tumbling", "time", size=1_000))
    t = np.array([100, 200, 90_500, 300], dtype=np.int64)
    ahead = np.array([False, False, True, False])
    assert counter.update(cols(4), t, watermark=None, ahead=ahead) == []
    assert counter.advance(1_500) and counter.open_windows == [(90_000, 91_000)]
    assert counter.take_event_counts() == [EventCounts(90_000, 91_000, 0, 1)]
    assert counter.ahead_events == 1
    (w,) = counter.advance(91_000)
    assert (w.start, w.n) == (90_000, 1)


def test_late_counters_are_bounded_and_survive_a_restart():
    spec = WindowSpec("tumbling", "time", size=100)
    counter = WindowedProfileCounter(profile(), spec, max_late_windows=5)
    counter.update(cols(1), np.array([10_000]), watermark=None)
    counter.advance(10_000)
    old = np.arange(0, 1_000, 100, dtype=np.int64)  # one late event in each of 10 closed windows
    counter.update(cols(10), old, watermark=10_000)
    assert counter.late_events == 10
    counts = counter.take_event_counts()
    assert [c.late_events for c in counts] == [1] * 10  # every window written once
    assert sorted(counter._late) == [5, 6, 7, 8, 9]  # only the 5 most recent kept
    again = WindowedProfileCounter(profile(), spec, max_late_windows=5)
    again.restore(json.loads(json.dumps(counter.snapshot())))
    again.update(cols(1), np.array([950]), watermark=10_000)
    assert again.take_event_counts() == [EventCounts(900, 1_000, 2, 0)] and again.late_events == 11


def test_after_a_long_restart_every_partition_gets_a_fresh_idle_timeout():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.observe(arr(0, 1), arr(5_000, 3_000), WALL)
    restarted = PartitionWatermarks(SKEW, IDLE)
    restarted.restore(wm.snapshot())
    later = WALL + 10 * IDLE  # the detector was down for ten idle timeouts
    restarted.observe(arr(0), arr(9_000), later)  # partition 0 delivers first: partition 1 still holds it
    assert restarted.current(later) == 3_000
    assert restarted.current(later + IDLE) == 9_000  # now partition 1 is idle for real


def test_a_stream_that_pauses_as_a_whole_resumes_without_one_partition_running_ahead():
    wm = PartitionWatermarks(SKEW, IDLE)
    wm.observe(arr(0, 1, 2), arr(24_000, 24_500, 24_900), WALL)
    assert wm.current(WALL + 2 * IDLE) == 24_900  # everyone idle: the latest
    wm.observe(arr(0), arr(33_500), WALL + 2 * IDLE)  # partition 0 speaks first after the pause
    assert wm.current(WALL + 2 * IDLE) == 24_900  # 1 and 2 are about to deliver: they still count
    wm.observe(arr(1, 2), arr(33_000, 34_000), WALL + 2 * IDLE + 100)
    assert wm.current(WALL + 2 * IDLE + 100) == 33_000
