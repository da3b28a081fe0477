"""Windows: bounds and counts against a per-event reference, lateness, snapshot/restore."""

import json
import math

import numpy as np
import pytest

from driftline.drift.profile import SCORE, ReferenceProfile
from driftline.drift import LabelCoverage, WindowedProfileCounter, WindowSpec


def make_profile(seed=0):
    rng = np.random.default_rng(seed)
    return ReferenceProfile.fit(
        numeric={"x": rng.normal(size=5_000), "y": rng.exponential(size=5_000)},
        categorical={"c": rng.choice(list("abcd"), 5_000)},
        score=rng.uniform(size=5_000), model="m", version=1,
    )


def make_stream(n, seed=0, disorder=0, gap_every=0):
    """Columns, and event times that mostly increase, with some disorder and gaps."""
    rng = np.random.default_rng(seed)
    cols = {
        "x": rng.normal(size=n), "y": rng.exponential(size=n),
        "c": rng.choice(np.array(["a", "b", "e", None], dtype=object), n).astype(object),
        SCORE: rng.uniform(size=n), "extra": np.zeros(n),
    }
    cols["x"][rng.random(n) < 0.01] = np.nan
    t = np.cumsum(rng.integers(0, 40, n)) + 10_000
    if gap_every:
        t = t + (np.arange(n) // gap_every) * 50_000
    if disorder:
        t = t - rng.integers(0, disorder, n) * (rng.random(n) < 0.2)
    return cols, t.astype(np.int64)


def naive_windows(profile, spec, cols, t):
    """One event at a time: which windows each event lands in, and which are late."""
    bins = {f: fp.bin_indices(cols[f]) for f, fp in profile.features.items()}
    hop, size = spec.hop, spec.size
    wm = None
    wins = {}
    late = 0
    for i in range(len(t)):
        coord = int(t[i]) if spec.by == "time" else i
        dropped = False
        for k in range(math.floor((coord - size) / hop) + 1, coord // hop + 1):
            start, end = k * hop, k * hop + size
            assert start <= coord < end
            if spec.by == "time" and wm is not None and end + spec.allowed_lateness <= wm:
                dropped = True
                continue
            w = wins.setdefault(k, {"n": 0, "counts": {f: np.zeros(fp.n_bins, int) for f, fp in
                                                           profile.features.items()}, "t": []})
            w["n"] += 1
            w["t"].append(int(t[i]))
            for f in profile.features:
                w["counts"][f][bins[f][i]] += 1
        late += dropped
        if spec.by == "time":
            wm = int(t[i]) if wm is None else max(wm, int(t[i]))
    out = []
    for k in sorted(wins):
        w = wins[k]
        out.append((k * hop, k * hop + size, w["n"], {f: c.tolist() for f, c in w["counts"].items()},
                    min(w["t"]), max(w["t"])))
    return out, late


def run(counter, cols, t, cuts):
    closed = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        out = counter.update({f: v[a:b] for f, v in cols.items()}, event_time_ms=t[a:b])
        for w in out:
            if counter.spec.by == "time":
                assert w.end + counter.spec.allowed_lateness <= counter.watermark
            else:
                assert w.end <= counter.n_seen
        closed += out
    return closed


def as_tuples(windows):
    return [(w.start, w.end, w.n, {f: c.tolist() for f, c in w.counts.items()},
             w.min_event_time_ms, w.max_event_time_ms) for w in windows]


def random_cuts(n, rng, k=7):
    return [0, *sorted(rng.choice(np.arange(1, n), k, replace=False).tolist()), n]


SPECS = [
    WindowSpec("tumbling", "count", size=500),
    WindowSpec("hopping", "count", size=500, step=125),
    WindowSpec("hopping", "count", size=300, step=200),
    WindowSpec("tumbling", "time", size=5_000),
    WindowSpec("tumbling", "time", size=5_000, allowed_lateness=1_000),
    WindowSpec("hopping", "time", size=6_000, step=2_000, allowed_lateness=300),
    WindowSpec("hopping", "time", size=5_000, step=5_000),
    WindowSpec("hopping", "time", size=4_000, step=3_000),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.by}-{s.size}-{s.step}-{s.allowed_lateness}")
@pytest.mark.parametrize("seed", [0, 1])
def test_windows_match_naive_reference(spec, seed):
    profile = make_profile()
    cols, t = make_stream(4_000, seed=seed, disorder=2_500 if spec.by == "time" else 0, gap_every=1_500)
    rng = np.random.default_rng(seed)
    counter = WindowedProfileCounter(profile, spec, sample_size=50, seed=seed)
    closed = run(counter, cols, t, random_cuts(len(t), rng))
    closed += counter.flush()
    expected, late = naive_windows(profile, spec, cols, t)
    assert as_tuples(closed) == expected
    assert counter.late_events == late
    assert counter.n_seen == len(t)
    if spec.by == "time" and spec.allowed_lateness < 2_500:
        assert late > 0  # the stream's disorder really produces late events
    for w in closed:
        assert w.start % spec.hop == 0 and w.end - w.start == spec.size
        assert set(w.samples) == {"x", "y", SCORE}
        assert len(w.samples["x"]) == min(50, w.n)
        assert (w.model, w.version) == ("m", 1)


def test_count_windows_bounds():
    profile = make_profile()
    cols, t = make_stream(1_000)
    tumbling = WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=300))
    out = tumbling.update(cols, t)
    assert [(w.start, w.end, w.n) for w in out] == [(0, 300, 300), (300, 600, 300), (600, 900, 300)]
    assert [(w.start, w.end, w.n) for w in tumbling.flush()] == [(900, 1200, 100)]
    hopping = WindowedProfileCounter(profile, WindowSpec("hopping", "count", size=400, step=200))
    out = hopping.update(cols, t)
    # window [-200, 200) exists too: hopping windows are aligned on multiples of step
    assert [(w.start, w.end, w.n) for w in out] == [(-200, 200, 200), (0, 400, 400), (200, 600, 400),
                                                    (400, 800, 400), (600, 1000, 400)]
    assert hopping.open_windows == [(800, 1200)]
    # every bin count of a window adds up to its n
    for w in out:
        assert all(c.sum() == w.n for c in w.counts.values())


def test_time_windows_and_late_events():
    profile = make_profile()
    spec = WindowSpec("tumbling", "time", size=1_000, allowed_lateness=200)
    counter = WindowedProfileCounter(profile, spec)

    def batch(times):
        n = len(times)
        cols = {"x": np.zeros(n), "y": np.zeros(n), "c": np.array(["a"] * n, dtype=object), SCORE: np.zeros(n)}
        return counter.update(cols, np.array(times))

    assert batch([100, 900, 1_100]) == []           # watermark 1100 < 1000 + 200
    assert counter.open_windows == [(0, 1_000), (1_000, 2_000)]
    assert batch([950]) == []                       # out of order, within lateness: counted
    out = batch([1_250, 10])                        # 1250 closes [0, 1000); then 10 is late
    assert [(w.start, w.end, w.n) for w in out] == [(0, 1_000, 3)]
    assert counter.late_events == 1
    out = batch([999, 5_000])                       # late again, and closes [1000, 2000)
    assert [(w.start, w.end, w.n) for w in out] == [(1_000, 2_000, 2)]
    assert counter.late_events == 2 and counter.n_seen == 8 and counter.watermark == 5_000


def test_hopping_time_partial_lateness():
    profile = make_profile()
    counter = WindowedProfileCounter(profile, WindowSpec("hopping", "time", size=1_000, step=500))
    cols = {"x": np.zeros(3), "y": np.zeros(3), "c": np.array(["a"] * 3, dtype=object), SCORE: np.zeros(3)}
    out = counter.update(cols, np.array([100, 1_000, 700]))
    # the event at 700 is too late for [0, 1000) but still counts in [500, 1500)
    assert [(w.start, w.end, w.n) for w in out] == [(-500, 500, 1), (0, 1_000, 1)]
    assert counter.late_events == 1
    assert [(w.start, w.end, w.n) for w in counter.flush()] == [(500, 1_500, 2), (1_000, 2_000, 1)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.by}-{s.size}-{s.step}-{s.allowed_lateness}")
def test_snapshot_restore_mid_window_loses_nothing(spec):
    profile = make_profile()
    cols, t = make_stream(3_000, seed=3, disorder=2_000 if spec.by == "time" else 0)
    rng = np.random.default_rng(11)
    whole = WindowedProfileCounter(profile, spec, sample_size=40, seed=5)
    ref = run(whole, cols, t, [0, 700, 1_900, 3_000]) + whole.flush()

    for split in rng.choice(np.arange(1, 3_000), 4, replace=False).tolist():
        first = WindowedProfileCounter(profile, spec, sample_size=40, seed=5)
        got = run(first, cols, t, [0, split // 2, split])
        assert first.open_windows  # the cut falls inside a window
        snap = json.loads(json.dumps(first.snapshot(), allow_nan=False))
        second = WindowedProfileCounter(profile, spec, sample_size=40, seed=5)
        second.restore(snap)
        got += run(second, cols, t, [split, (split + 3_000) // 2, 3_000]) + second.flush()
        assert as_tuples(got) == as_tuples(ref)
        assert second.late_events == whole.late_events and second.n_seen == whole.n_seen
        for a, b in zip(got, ref):  # the samples do not depend on batching or restarts
            for f in a.samples:
                assert np.array_equal(a.samples[f], b.samples[f], equal_nan=True)


def test_restore_checks_compatibility():
    profile = make_profile()
    spec = WindowSpec("tumbling", "count", size=100)
    snap = WindowedProfileCounter(profile, spec).snapshot()
    with pytest.raises(ValueError):
        WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=200)).restore(snap)
    with pytest.raises(ValueError):
        WindowedProfileCounter(make_profile(seed=0), spec, sample_size=3).restore(snap)
    other = ReferenceProfile.fit(numeric={"x": np.arange(10.0)})
    with pytest.raises(ValueError):
        WindowedProfileCounter(other, spec).restore(snap)


def test_sample_is_uniform_subset_of_window():
    profile = make_profile()
    cols, t = make_stream(10_000, seed=9)
    counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=10_000), sample_size=500)
    (w,) = counter.update(cols, t)
    s = w.samples["y"]
    assert s.size == 500 and len(set(s.tolist())) == 500
    assert np.isin(s, cols["y"]).all()
    assert abs(np.mean(s) - np.mean(cols["y"])) < 0.15


def test_window_stats_detect_a_shift():
    profile = make_profile()
    rng = np.random.default_rng(2)
    n = 20_000
    cols = {"x": rng.normal(size=n), "y": rng.exponential(size=n), "c": rng.choice(list("abcd"), n),
            SCORE: rng.uniform(size=n)}
    cols["x"][n // 2:] += 1.5
    counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "count", size=5_000))
    stats = [w.stats(profile) for w in counter.update(cols, np.arange(n) * 10)]
    assert [s.features["x"].band for s in stats] == ["stable", "stable", "act", "act"]
    assert all(s.features["y"].band == "stable" for s in stats)
    assert stats[2].features["x"].wasserstein == pytest.approx(1.5, abs=0.25)
    assert stats[0].features["c"].chi2_pvalue > 1e-3
    assert stats[2].max_psi == stats[2].features["x"].psi
    assert stats[0].time_ms == 49_990
    json.dumps(stats[0].to_dict(), allow_nan=False)
    sig = stats[2].to_signals()
    assert {(r["feature"], r["statistic"]) for r in sig} >= {("x", "psi"), ("x", "wasserstein"), ("c", "chi2")}


def test_bad_input():
    profile = make_profile()
    with pytest.raises(ValueError):
        WindowSpec("hopping", "time", size=10)
    with pytest.raises(ValueError):
        WindowSpec("hopping", "time", size=10, step=20)
    with pytest.raises(ValueError):
        WindowSpec("tumbling", "count", size=10, allowed_lateness=5)
    counter = WindowedProfileCounter(profile, WindowSpec("tumbling", "time", size=10))
    cols, t = make_stream(10)
    with pytest.raises(ValueError):
        counter.update(cols)
    with pytest.raises(ValueError):
        counter.update({"x": cols["x"]}, t)
    assert counter.update({f: v[:0] for f, v in cols.items()}, t[:0]) == []


# -- label coverage -----------------------------------------------------------------------

def test_label_coverage_against_naive():
    rng = np.random.default_rng(1)
    size = 60_000
    pred_t = rng.integers(0, 10 * size, 5_000)
    labeled = rng.random(5_000) < 0.6
    delay = rng.exponential(600_000, 5_000).astype(np.int64)
    lab_pt, lab_lt = pred_t[labeled], pred_t[labeled] + delay[labeled]
    cov = LabelCoverage(size_ms=size)
    for part in np.array_split(np.arange(5_000), 3):
        cov.add_predictions(pred_t[part])
    order = rng.permutation(lab_pt.size)  # labels arrive in any order
    for part in np.array_split(order, 4):
        cov.add_labels(lab_pt[part], lab_lt[part])
    snap = json.loads(json.dumps(cov.snapshot()))
    again = LabelCoverage(size_ms=size)
    again.restore(snap)
    for got in (cov.windows(), again.windows()):
        assert len(got) == 10
        for w in got:
            inw = (pred_t >= w.start) & (pred_t < w.end)
            d = delay[inw & labeled]
            assert w.n_predictions == inw.sum() and w.n_labeled == d.size
            assert w.coverage == pytest.approx(d.size / inw.sum())
            assert w.delay_mean_ms == pytest.approx(d.mean()) and w.delay_max_ms == d.max()
            p50 = w.delay_quantile_ms(0.5)
            assert np.mean(d <= p50) >= 0.5  # an upper bound of the median
            json.dumps(w.to_dict())
    gone = cov.evict(before_ms=3 * size)
    assert [w.start for w in gone] == [0, size, 2 * size] and len(cov.windows()) == 7
