"""PSI and the other statistics against straightforward reference computations."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from driftline.drift.profile import MISSING, SCORE, UNSEEN, FeatureProfile, ReferenceProfile
from driftline.drift.psi import (
    chi_square,
    feature_stats,
    js_distance,
    psi,
    psi_band,
    wasserstein,
)

EPS = 1e-4


# -- independent reference implementations (plain Python over the profile's bins) ---------

def naive_numeric_counts(edges, values):
    """Right-closed bins (-inf, e0], (e0, e1], ..., (e_last, inf), then a NaN bin."""
    bounds = [-math.inf, *list(edges), math.inf]
    counts = [0] * (len(bounds) + 0)  # len(bounds) - 1 value bins + 1 missing bin
    for v in values:
        v = float(v)
        if math.isnan(v):
            counts[-1] += 1
            continue
        for i in range(len(bounds) - 1):
            lo, hi = bounds[i], bounds[i + 1]
            last = i == len(bounds) - 2
            if (v > lo or (i == 0 and v == -math.inf)) and (v <= hi or last):
                counts[i] += 1
                break
    return counts


def naive_categorical_counts(categories, values):
    counts = [0] * (len(categories) + 2)
    pos = {c: i for i, c in enumerate(categories)}
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            counts[-1] += 1
        else:
            counts[pos.get(str(v), len(categories))] += 1
    return counts


def naive_psi(counts, expected, eps=EPS):
    total = sum(counts)
    out = 0.0
    for c, e in zip(counts, expected):
        a = c / total
        a = eps if a == 0 else a
        e = eps if e == 0 else e
        out += (a - e) * math.log(a / e)
    return out


# -- PSI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_numeric_psi_matches_naive(seed):
    rng = np.random.default_rng(seed)
    train = rng.gamma(2.0, 3.0, 20_000)
    train[rng.random(train.size) < 0.02] = np.nan
    fp = FeatureProfile.fit_numeric("x", train, n_bins=10)

    # profile proportions themselves
    naive_ref = naive_numeric_counts(fp.edges, train)
    assert np.allclose(fp.expected, np.array(naive_ref) / train.size, atol=0, rtol=1e-12)

    # live data: narrower range (empty low/high bins), some NaN, some infinities
    live = rng.gamma(2.0 + seed, 3.0, 3_000)
    live = live[(live > fp.edges[2]) & (live < fp.edges[-2])]
    live = np.concatenate([live, [np.nan] * seed, [np.inf] * (seed % 2)])
    counts = fp.counts(live)
    naive = naive_numeric_counts(fp.edges, live)
    assert counts.tolist() == naive
    assert (counts == 0).sum() >= 2  # empty bins are exercised
    assert psi(counts, fp.expected) == pytest.approx(naive_psi(naive, fp.expected.tolist()), abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_categorical_psi_matches_naive(seed):
    rng = np.random.default_rng(100 + seed)
    cats = np.array(["a", "b", "c", "d", "e", 7], dtype=object)
    train = rng.choice(cats, 5_000, p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05]).astype(object)
    fp = FeatureProfile.fit_categorical("c", train)
    assert fp.categories == ["7", "a", "b", "c", "d", "e"]
    assert fp.expected[-2:].tolist() == [0.0, 0.0]  # no unseen, no missing in training

    live = rng.choice(np.array(["a", "b", "zz", None, float("nan"), 7, "7"], dtype=object), 2_000).astype(object)
    counts = fp.counts(live)
    naive = naive_categorical_counts(fp.categories, live.tolist())
    assert counts.tolist() == naive
    assert counts[fp.categories.index("c")] == 0  # an empty bin
    assert psi(counts, fp.expected) == pytest.approx(naive_psi(naive, fp.expected.tolist()), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_psi_of_random_counts_matches_naive(seed):
    rng = np.random.default_rng(seed)
    k = rng.integers(2, 30)
    expected = rng.dirichlet(np.ones(k))
    expected[rng.random(k) < 0.2] = 0.0
    expected /= expected.sum()
    counts = rng.integers(0, 50, k)
    counts[rng.random(k) < 0.3] = 0
    counts[0] += 1
    assert psi(counts, expected) == pytest.approx(naive_psi(counts.tolist(), expected.tolist()), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_same_distribution_is_stable(seed):
    rng = np.random.default_rng(seed)
    fp = FeatureProfile.fit_numeric("x", rng.normal(size=100_000))
    for _ in range(2):
        window = rng.normal(size=10_000)
        value = psi(fp.counts(window), fp.expected)
        assert value < 0.01
        assert psi_band(value) == "stable"
    cp = FeatureProfile.fit_categorical("c", rng.choice(list("abcdefgh"), 100_000))
    assert psi(cp.counts(rng.choice(list("abcdefgh"), 10_000)), cp.expected) < 0.01


@pytest.mark.parametrize("seed", range(3))
def test_two_windows_of_one_distribution_are_close(seed):
    # the training sample itself is only 10k: two 10k samples of one distribution
    rng = np.random.default_rng(seed)
    fp = FeatureProfile.fit_numeric("x", rng.exponential(size=10_000))
    assert psi(fp.counts(rng.exponential(size=10_000)), fp.expected) < 0.01


@pytest.mark.parametrize("seed", range(3))
def test_shifted_distribution_acts(seed):
    rng = np.random.default_rng(seed)
    fp = FeatureProfile.fit_numeric("x", rng.normal(size=100_000))
    value = psi(fp.counts(rng.normal(1.0, 1.0, 10_000)), fp.expected)
    assert value >= 0.25 and psi_band(value) == "act"
    cp = FeatureProfile.fit_categorical("c", rng.choice(list("abc"), 100_000, p=[0.6, 0.3, 0.1]))
    value = psi(cp.counts(rng.choice(list("abc"), 10_000, p=[0.2, 0.3, 0.5])), cp.expected)
    assert value >= 0.25


def test_psi_epsilon_is_documented_replacement():
    # bin 3 empty in the window, bin 0 empty in the reference: exactly eps, no renormalising
    counts = np.array([10, 40, 50, 0])
    expected = np.array([0.0, 0.5, 0.4, 0.1])
    a = np.array([0.1, 0.4, 0.5, EPS])
    e = np.array([EPS, 0.5, 0.4, 0.1])
    assert psi(counts, expected) == pytest.approx(float(np.sum((a - e) * np.log(a / e))), abs=1e-12)
    assert psi(counts, expected, eps=1e-3) != psi(counts, expected)
    # a bin empty on both sides contributes 0
    assert psi(np.array([5, 5, 0]), np.array([0.5, 0.5, 0.0])) == pytest.approx(0.0, abs=1e-15)


def test_psi_errors():
    with pytest.raises(ValueError):
        psi(np.array([0, 0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        psi(np.array([1, 2, 3]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        psi_band(float("nan"))


def test_bands():
    assert [psi_band(v) for v in (0.0, 0.09999, 0.1, 0.2, 0.24999, 0.25, 10.0)] == [
        "stable", "stable", "monitor", "monitor", "monitor", "act", "act"]


# -- other statistics -------------------------------------------------------------------

def test_js_distance_is_scipy_base2():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 100, 12)
    expected = rng.dirichlet(np.ones(12))
    p = counts / counts.sum()
    assert js_distance(counts, expected) == pytest.approx(jensenshannon(p, expected, base=2))
    m = 0.5 * (p + expected)

    def kl(x, y):
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    assert js_distance(counts, expected) == pytest.approx(math.sqrt(0.5 * kl(p, m) + 0.5 * kl(expected, m)))
    assert 0.0 <= js_distance(counts, expected) <= 1.0


def test_wasserstein_against_reference_quantiles():
    rng = np.random.default_rng(4)
    fp = FeatureProfile.fit_numeric("x", rng.normal(size=50_000))
    assert fp.quantiles.size == 101
    same = wasserstein(rng.normal(size=1_000), fp.quantiles)
    shifted = wasserstein(rng.normal(2.0, 1.0, 1_000), fp.quantiles)
    assert same < 0.15
    assert shifted == pytest.approx(2.0, abs=0.2)
    assert math.isnan(wasserstein(np.array([np.nan]), fp.quantiles))


def test_chi_square_matches_scipy_and_drops_double_empty_bins():
    counts = np.array([30, 50, 20, 0, 0])
    expected = np.array([0.3, 0.4, 0.3, 0.0, 0.0])
    r = chi_square(counts, expected)
    ref = sps.chisquare(counts[:3], f_exp=expected[:3] * 100)
    assert (r.statistic, r.pvalue, r.dof) == pytest.approx((ref.statistic, ref.pvalue, 2))
    # an unseen category (0 in the reference) gets eps, then expected is renormalised
    counts = np.array([30, 50, 15, 5])
    r = chi_square(counts, np.array([0.3, 0.4, 0.3, 0.0]))
    e = np.array([0.3, 0.4, 0.3, EPS])
    e = e / e.sum()
    ref = sps.chisquare(counts, f_exp=e * 100)
    assert r.statistic == pytest.approx(ref.statistic) and r.pvalue == pytest.approx(ref.pvalue) and r.dof == 3


def test_feature_stats_numeric_and_categorical():
    rng = np.random.default_rng(5)
    prof = ReferenceProfile.fit(numeric={"x": rng.normal(3.0, 2.0, 10_000)},
                                categorical={"c": rng.choice(list("ab"), 10_000)})
    xs = rng.normal(3.0, 2.0, 5_000)
    s = feature_stats(prof.features["x"], prof.features["x"].counts(xs), xs[:500])
    assert s.kind == "numeric" and s.n == 5_000 and s.chi2 is None
    assert s.wasserstein_norm == pytest.approx(s.wasserstein / prof.features["x"].std)
    json.dumps(s.to_dict())
    c = feature_stats(prof.features["c"], prof.features["c"].counts(rng.choice(list("ab"), 5_000)))
    assert c.kind == "categorical" and c.wasserstein is None and c.chi2_dof == 1 and c.chi2_pvalue > 1e-4


# -- profiles ---------------------------------------------------------------------------

def test_duplicate_edges_collapse_and_tails_are_open():
    values = np.array([0.0] * 700 + list(np.linspace(1, 10, 300)))
    fp = FeatureProfile.fit_numeric("zero_inflated", values, n_bins=10)
    assert np.all(np.diff(fp.edges) > 0)
    assert fp.n_bins == fp.edges.size + 2 < 12
    assert fp.expected[0] == pytest.approx(0.7)  # (-inf, 0] holds every zero
    assert fp.bin_indices(np.array([-1e300, -np.inf, 1e300, np.inf])).tolist() == [0, 0, fp.n_bins - 2, fp.n_bins - 2]
    assert fp.labels[-1] == MISSING and fp.labels[0].startswith("(-inf")


def test_degenerate_columns():
    fp = FeatureProfile.fit_numeric("all_nan", np.full(10, np.nan))
    assert fp.n_bins == 2 and fp.expected.tolist() == [0.0, 1.0] and fp.quantiles is None
    assert fp.counts(np.array([1.0, np.nan])).tolist() == [1, 1]
    cp = FeatureProfile.fit_categorical("empty", np.array([None, None], dtype=object))
    assert cp.labels == [UNSEEN, MISSING]
    assert cp.counts(np.array(["x", None], dtype=object)).tolist() == [1, 1]
    const = FeatureProfile.fit_numeric("const", np.ones(100))
    assert const.n_bins == 3 and const.expected.tolist() == [1.0, 0.0, 0.0]


def test_categorical_inputs_of_many_dtypes():
    fp = FeatureProfile.fit_categorical("c", np.array(["x", "y"]))
    assert fp.counts(np.array([b"x", b"q"])).tolist() == [1, 0, 1, 0]
    assert fp.counts(np.array(["y", "y"], dtype=object)).tolist() == [0, 2, 0, 0]
    num = FeatureProfile.fit_categorical("n", np.array([1, 2, 2, 3]))
    assert num.categories == ["1", "2", "3"]
    assert num.counts(np.array([2, 5, 1])).tolist() == [1, 1, 0, 1, 0]
    f = FeatureProfile.fit_categorical("f", np.array([1.0, np.nan]))
    assert f.labels == ["1.0", UNSEEN, MISSING] and f.expected.tolist() == [0.5, 0.0, 0.5]


def test_profile_json_roundtrip():
    rng = np.random.default_rng(6)
    prof = ReferenceProfile.fit(
        numeric={"a": rng.normal(size=1000), "b": np.r_[rng.integers(0, 3, 999).astype(float), np.nan]},
        categorical={"c": np.array(["u", "v", None] * 100, dtype=object)},
        score=rng.uniform(size=1000), n_bins=5, model="m", version=7,
    )
    assert set(prof.features) == {"a", "b", "c", SCORE}
    again = ReferenceProfile.from_dict(json.loads(json.dumps(prof.to_dict(), allow_nan=False)))
    assert (again.model, again.version) == ("m", 7)
    probe = {"a": rng.normal(size=200), "b": rng.integers(-1, 5, 200).astype(float), SCORE: rng.uniform(size=200),
             "c": np.array(["u", "w", None, "v"] * 50, dtype=object)}
    for name, fp in prof.features.items():
        fp2 = again.features[name]
        assert (fp2.kind, fp2.n_bins, fp2.n_reference) == (fp.kind, fp.n_bins, fp.n_reference)
        assert np.array_equal(fp2.expected, fp.expected)
        assert np.array_equal(fp2.bin_indices(probe[name]), fp.bin_indices(probe[name]))


def test_profile_rejects_bad_input():
    with pytest.raises(ValueError):
        ReferenceProfile.fit(numeric={"x": np.ones(3)}, categorical={"x": np.ones(3)})
    with pytest.raises(ValueError):
        ReferenceProfile.fit(numeric={SCORE: np.ones(3)})
    with pytest.raises(ValueError):
        FeatureProfile("x", "numeric", np.ones(3) / 3, edges=np.array([2.0, 1.0]))
    with pytest.raises(ValueError):
        FeatureProfile("x", "ordinal", np.ones(1))
