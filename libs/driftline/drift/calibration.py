"""Alarm thresholds for PSI and JS: the fixed bands, or a level set by a false-alarm rate.

**Fixed** (the default): a feature alarms at PSI ≥ 0.25 and an incident ends when every
PSI is below 0.10, whatever the window size ``n`` and the reference size ``m``.

**Calibrated**: the threshold is the PSI that a window *without drift* exceeds with a
chosen probability. Under no drift, PSI ≈ (1/n + 1/m) · χ²(B − 1) for ``B`` bins
(Yurdakul 2018): the window's proportions and the reference's are both multinomial
estimates of the same probabilities, and PSI is, to second order, Pearson's
chi-square of their difference. Across the ``F`` monitored features (the score
included) the rate is split by Bonferroni: each feature alarms above its own
``1 − α/F`` null quantile, so a window's false-alarm rate (any feature) is at most ``α``,
whatever the features' dependence.

**Where the χ² approximation fails, measured.** (see the README's "Calibrated
thresholds"): at ``n = 200`` with 10 quantile bins the χ² quantile is exceeded 1.4× to
2.9× as often as it should be (tails 1e-2 to 1e-4); for a categorical feature with rare
categories (proportions down to 5e-5; the ``1e-4`` epsilon that keeps empty bins
finite; categories the reference never saw) 3× to 26× at ``n = 200`` and 2.6× to 10× at
``n = 1,000`` to ``10,000`` (``m = 2,000``), while with a large ``m`` it can be 2× to 3×
too conservative. So the calibrated threshold does not use the χ² formula: it
is the quantile of a **Monte-Carlo null for the feature's own bins**, with the same
epsilon as :func:`driftline.drift.psi.psi`:

* the probabilities the live stream really has are unknown; given the reference
  proportions ``e`` of ``m`` rows they are drawn from Dirichlet(``m·e``). For quantile bins
  of a continuous feature this is exact (the probability mass between order statistics
  of ``m`` uniform draws is Dirichlet); for categories it is the posterior under
  Haldane's prior. Categories the reference never saw get the Good–Turing share of the
  unseen bin: Dirichlet weight ``N₁``, the number of categories seen exactly once.
  Bins empty in the reference otherwise (the missing bin of a feature that had no
  missing value) stay empty: a value appearing there is drift;
* a window is Multinomial(``n``, those probabilities); its PSI against ``e`` (and its JS
  distance) is one draw of the null.

``draws`` windows (50,000 by default, about 0.2 s for 10 bins) are simulated once per
(``n``, ``m``, bins, epsilon) and cached. A tail the draws reach (at least 200 draws above
it: tails ≥ 4e-3 by default) is read from them, at the order statistic that is above the
true quantile with 95 % confidence. A deeper tail is extrapolated with an exponential
tail, i.e. the quantile grows by the last decade's spacing per further decade: the
spacing of χ²-like tails shrinks with depth, so this errs on the safe side.
Time windows hold different ``n``: ``n`` is rounded *down* to a grid of ratio 2^(1/16)
(a smaller ``n`` means a higher threshold, so rounding down stays conservative) to bound
the number of simulations.

**Reset (hysteresis) in calibrated mode.** An incident ends at the first window where
every feature is below its null quantile at ``reset_rate / F`` (``reset_rate = 0.5``): a
window without drift ends it with probability at least 1/2, so a stationary stream ends
an incident within two windows on average, while PSI between the reset level and the
alarm level keeps it open. The ratio of the fixed bands (0.10 / 0.25) would instead keep
an incident open on a stationary stream for many windows once ``F`` is large.

**Reference size.** ``m`` is the row count a :class:`~driftline.drift.profile.FeatureProfile`
was fitted on (``n_reference``). A profile without one (``n_reference = 0``: built by
hand) is taken as ``m = n``, as noisy as the window: conservative, it doubles the null's
scale compared with an exact reference.

**JS distance.** The same draws give the JS distance's null (no epsilon needed, JS is
finite with empty bins), so its threshold is set at the same rate. Only PSI drives the
:class:`~driftline.drift.policy.AlertPolicy`; the JS threshold is written with the
JS rows for whoever alarms on JS.

**Caveat: the rate is averaged over references.** The reference's sampling error is
the same in every window. When ``n`` is much larger than ``m``, a window's PSI is mostly
that fixed error, so for *one* reference a feature either (almost) never or (almost)
always exceeds a threshold set for it; the rate ``α`` holds on average over the
references one could have fitted. Use a reference several times larger than the
windows when that matters. Measured where it is weakest: a categorical feature whose
rarest categories the reference saw once or twice, ``n = 10,000`` and ``m = 2,000``,
exceeds its 1 % threshold 1.5× to 2× as often as it should (the Dirichlet posterior of a
category seen once is narrower than the sampling spread of such counts).

Examples
--------
>>> import numpy as np
>>> from driftline.drift.profile import ReferenceProfile
>>> from driftline.drift.calibration import ThresholdRule, asymptotic_psi_threshold

>>> rng = np.random.default_rng(0)
>>> profile = ReferenceProfile.fit(numeric={"x": rng.normal(size=20_000)}, score=rng.uniform(size=20_000))

>>> fixed = ThresholdRule().for_window(profile, n=1000)
>>> fixed["x"].mode, fixed["x"].psi, fixed["x"].reset_below, fixed["x"].js
('fixed', 0.25, 0.1, None)

>>> rule = ThresholdRule("calibrated", false_alarm_rate=0.01)   # 2 features: 0.005 each
>>> t = rule.for_window(profile, n=1000)["x"]
>>> t.mode, round(t.psi, 4), round(t.reset_below, 4), round(t.js, 4)
('calibrated', 0.0259, 0.0123, 0.0683)

The χ² formula is close at ``n = 1000`` (the threshold above is for ``n = 980``, the grid
point below 1000), and too low at ``n = 200``:

>>> round(asymptotic_psi_threshold(n=1000, m=20_000, n_bins=10, tail=0.005), 4)
0.0248
>>> round(rule.for_window(profile, n=200)["x"].psi, 3), round(asymptotic_psi_threshold(200, 20_000, 10, 0.005), 3)
(0.129, 0.119)

References
----------
[^1]: Yurdakul, B. (2018). Statistical Properties of Population Stability Index.
Western Michigan University, dissertation 3208.
[^2]: Dunn, O. J. (1961). Multiple comparisons among means. Journal of the American
Statistical Association, 56(293), 52-64.
[^3]: Good, I. J. (1953). The population frequencies of species and the estimation of
population parameters. Biometrika, 40(3-4), 237-264.
[^4]: Pyke, R. (1965). Spacings. Journal of the Royal Statistical Society B, 27(3), 395-449.

"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats as _sps
from scipy.special import rel_entr

from driftline.drift.profile import FeatureProfile, ReferenceProfile
from driftline.drift.psi import ACT, DEFAULT_EPS, MONITOR

__all__ = [
    "FIXED",
    "CALIBRATED",
    "MODES",
    "FeatureThreshold",
    "NullQuantiles",
    "ThresholdRule",
    "asymptotic_psi_threshold",
    "null_quantiles",
    "reference_size",
]

FIXED = "fixed"
CALIBRATED = "calibrated"
MODES = (FIXED, CALIBRATED)

_N_GRID_STEPS_PER_OCTAVE = 16  # window sizes are rounded down to 2^(k/16): at most 4.4 % smaller
_MIN_EXCEEDANCES = 200  # a tail is read from the draws when this many draws lie beyond it
_CONFIDENCE_Z = 1.645  # the order statistic used is above the true quantile with 95 % confidence
_CHUNK = 50_000  # simulated windows per chunk: bounds memory whatever the number of draws


def asymptotic_psi_threshold(n: float, m: float, n_bins: int, tail: float) -> float:
    """The χ² approximation of the PSI no-drift quantile: (1/n + 1/m) · χ²₁₋ₜₐᵢₗ(B − 1).

    Parameters
    ----------
    n
        Window size (events).
    m
        Reference size (rows); ``math.inf`` for an exact reference.
    n_bins
        Bins with a non-zero reference proportion (``B``).
    tail
        Probability that a window without drift exceeds the threshold.

    >>> round(asymptotic_psi_threshold(1000, math.inf, 10, 0.05), 4)
    0.0169
    >>> asymptotic_psi_threshold(1000, 1000, 10, 0.05) > asymptotic_psi_threshold(1000, 10_000, 10, 0.05)
    True

    """
    if n_bins < 2:
        return 0.0
    return (1.0 / n + 1.0 / m) * float(_sps.chi2.isf(tail, n_bins - 1))


@dataclass(frozen=True)
class NullQuantiles:
    """PSI and JS distance that a window without drift exceeds with probability ``tail``."""

    psi: float
    js: float


def reference_size(profile: FeatureProfile, n: int) -> int:
    """Rows the feature's reference was fitted on; ``n`` when the profile does not say (see module doc)."""
    return profile.n_reference if profile.n_reference > 0 else int(n)


def _n_on_grid(n: int) -> int:
    """``n`` rounded down to the grid 2^(k/16) (integers; exact below 32)."""
    if n < 32:
        return max(int(n), 1)
    k = math.floor(math.log2(n) * _N_GRID_STEPS_PER_OCTAVE + 1e-9)
    return min(int(n), int(2.0 ** (k / _N_GRID_STEPS_PER_OCTAVE)))


def _dirichlet_weights(profile: FeatureProfile, m: int) -> np.ndarray:
    """Dirichlet parameters of the live bin probabilities given the reference (see module doc)."""
    weights = m * profile.expected
    if profile.kind == "categorical":
        seen_once = int(np.sum(np.rint(profile.expected[:-2] * m) == 1))
        weights = weights.copy()
        weights[-2] += seen_once  # the unseen bin (its reference proportion is 0)
    return weights


def _psi_rows(counts: np.ndarray, expected: np.ndarray, eps: float) -> np.ndarray:
    """:func:`driftline.drift.psi.psi` of every row of ``counts`` (same epsilon convention)."""
    a = counts / counts.sum(axis=1, keepdims=True)
    a = np.where(a == 0.0, eps, a)
    e = np.where(expected == 0.0, eps, expected)
    return np.sum((a - e) * np.log(a / e), axis=1)


def _js_rows(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """:func:`driftline.drift.psi.js_distance` of every row (scipy's jensenshannon, base 2)."""
    a = counts / counts.sum(axis=1, keepdims=True)
    e = expected / expected.sum()
    mid = (a + e) / 2.0
    divergence = (np.sum(rel_entr(a, mid), axis=1) + np.sum(rel_entr(e, mid), axis=1)) / 2.0
    return np.sqrt(np.maximum(divergence, 0.0) / math.log(2.0))


def _upper_tail_value(sorted_draws: np.ndarray, tail: float) -> float:
    """Smallest value that at most ``j`` draws reach, ``j`` the 95 %-confident count of draws
    beyond the true ``1 − tail`` quantile; ties move it to the next larger distinct value, and
    past the largest draw it is the float just above it."""
    k = sorted_draws.size
    expected_beyond = k * tail
    j = max(int(math.floor(expected_beyond - _CONFIDENCE_Z * math.sqrt(expected_beyond))), 1)
    value = sorted_draws[k - j]
    above = np.searchsorted(sorted_draws, value, side="left")
    if k - above > j:  # ties: more than j draws equal or exceed it
        nxt = np.searchsorted(sorted_draws, value, side="right")
        value = sorted_draws[nxt] if nxt < k else np.nextafter(value, math.inf)
    return float(value)


def _quantile(sorted_draws: np.ndarray, tail: float) -> float:
    """The value a null draw exceeds with probability ``tail`` (read, or extrapolated; see module doc)."""
    reachable = _MIN_EXCEEDANCES / sorted_draws.size
    if tail >= reachable:
        return _upper_tail_value(sorted_draws, tail)
    q_deep = _upper_tail_value(sorted_draws, reachable)
    q_shallow = _upper_tail_value(sorted_draws, min(10.0 * reachable, 0.5))
    decades = math.log10(reachable / tail) / math.log10(min(10.0 * reachable, 0.5) / reachable)
    return q_deep + max(q_deep - q_shallow, 0.0) * decades


def _draw_count(tails: tuple[float, ...], draws: int, max_draws: int) -> int:
    """Enough draws to read the smallest tail directly, within [draws, max_draws]."""
    return int(min(max_draws, max(draws, math.ceil(_MIN_EXCEEDANCES / min(tails)))))


@lru_cache(maxsize=4096)
def _simulated_quantiles(weights: tuple[float, ...], expected: tuple[float, ...], n: int, eps: float,
                         tails: tuple[float, ...], n_draws: int) -> tuple[NullQuantiles, ...]:
    """PSI and JS quantiles of the no-drift null at each tail, from ``n_draws`` simulated windows.

    Seeded by the key, so a threshold is the same in every process and after a restart.
    Simulated in chunks (bounded memory); only the quantiles are cached.
    """
    key = repr((weights, expected, n, eps, n_draws)).encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
    w = np.asarray(weights)
    e = np.asarray(expected)
    live = np.flatnonzero(w > 0)
    psi_parts, js_parts = [], []
    for start in range(0, n_draws, _CHUNK):
        size = min(_CHUNK, n_draws - start)
        counts = np.zeros((size, e.size), dtype=np.int64)
        if live.size == 1:
            counts[:, live[0]] = n
        elif live.size > 1:
            g = rng.standard_gamma(w[live], size=(size, live.size))
            counts[:, live] = rng.multinomial(n, g / g.sum(axis=1, keepdims=True))
        psi_parts.append(_psi_rows(counts, e, eps))
        js_parts.append(_js_rows(counts, e) ** 2)  # extrapolated as a divergence, then square-rooted
    psi_draws = np.sort(np.concatenate(psi_parts))
    js_squared = np.sort(np.concatenate(js_parts))
    return tuple(NullQuantiles(psi=_quantile(psi_draws, t), js=math.sqrt(_quantile(js_squared, t))) for t in tails)


def _null(profile: FeatureProfile, n: int, tails: tuple[float, ...], m: int, eps: float, draws: int,
          max_draws: int) -> tuple[NullQuantiles, ...]:
    for t in tails:
        if not 0.0 < t < 1.0:
            raise ValueError(f"tail must be in (0, 1), got {t}")
    if n < 1:
        raise ValueError("n must be >= 1")
    weights = tuple(np.round(_dirichlet_weights(profile, m), 6).tolist())
    return _simulated_quantiles(weights, tuple(profile.expected.tolist()), int(n), float(eps), tuple(tails),
                                _draw_count(tails, draws, max_draws))


def null_quantiles(profile: FeatureProfile, n: int, tail: float, *, m: int | None = None,
                   eps: float = DEFAULT_EPS, draws: int = 50_000, max_draws: int = 1_000_000) -> NullQuantiles:
    """PSI and JS distance that a window of ``n`` events without drift exceeds with probability ``tail``.

    Monte-Carlo null for this feature's bins (see the module doc): at least ``draws``
    simulated windows, more (up to ``max_draws``) when ``tail`` is small, so that 200
    draws lie beyond it; cached per (bins, ``n``, ``m``, ``eps``, tail). ``n`` is used as
    given (:class:`ThresholdRule` rounds it first); ``m`` defaults to :func:`reference_size`.

    >>> import numpy as np
    >>> from driftline.drift.profile import FeatureProfile
    >>> fp = FeatureProfile.fit_numeric("x", np.random.default_rng(1).normal(size=5000))
    >>> q = null_quantiles(fp, 1000, 0.01)
    >>> round(q.psi, 3), round(asymptotic_psi_threshold(1000, 5000, 10, 0.01), 3)
    (0.026, 0.026)

    """
    m = reference_size(profile, n) if m is None else int(m)
    return _null(profile, n, (tail,), m, eps, draws, max_draws)[0]


@dataclass(frozen=True)
class FeatureThreshold:
    """The alarm decision in force for one feature in one window.

    ``psi``: PSI at or above which the window counts as drifted; ``reset_below``: PSI
    below which (for every feature) an incident ends; ``js``: the JS distance at the
    same false-alarm rate (calibrated mode only, else None); ``mode``: ``"fixed"`` or
    ``"calibrated"``.
    """

    mode: str
    psi: float
    reset_below: float
    js: float | None = None


@dataclass(frozen=True)
class ThresholdRule:
    """How the PSI alarm level of a window is set: fixed bands or a false-alarm rate.

    Parameters
    ----------
    mode
        ``"fixed"``: ``psi_threshold`` and ``reset_below`` as they are. ``"calibrated"``:
        per feature, the no-drift quantile at ``false_alarm_rate / F`` (alarm) and at
        ``reset_rate / F`` (reset), ``F`` the number of features in the window.
    psi_threshold, reset_below
        The fixed levels (the "act" band and the end of an incident).
    false_alarm_rate
        Probability that a window without drift alarms on any feature (calibrated).
    reset_rate
        Probability that a window without drift fails to end an incident, at most.
    draws, max_draws
        Monte-Carlo draws of the null per (bins, ``n``, ``m``): at least ``draws``, and
        enough to read the alarm's tail directly, up to ``max_draws``; deeper tails are
        extrapolated (see the module doc).
    eps
        The epsilon of :func:`driftline.drift.psi.psi` the statistics use.
    """

    mode: str = FIXED
    psi_threshold: float = ACT
    reset_below: float = MONITOR
    false_alarm_rate: float = 0.01
    reset_rate: float = 0.5
    draws: int = 50_000
    max_draws: int = 1_000_000
    eps: float = DEFAULT_EPS
    # profile -> {(n on the grid, features): FeatureThreshold}; a window's lookup then costs no hashing of bins
    _memo: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, init=False, repr=False,
                                             compare=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"threshold mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0.0 < self.false_alarm_rate < self.reset_rate < 1.0:
            raise ValueError(f"need 0 < false_alarm_rate < reset_rate < 1, got {self.false_alarm_rate} "
                             f"and {self.reset_rate}")
        if not 0.0 <= self.reset_below <= self.psi_threshold:
            raise ValueError("need 0 <= reset_below <= psi_threshold")
        if not 10 * _MIN_EXCEEDANCES <= self.draws <= self.max_draws:
            raise ValueError(f"need {10 * _MIN_EXCEEDANCES} <= draws <= max_draws")

    def for_feature(self, profile: FeatureProfile, n: int, n_features: int) -> FeatureThreshold:
        """The threshold of one feature in a window of ``n`` events with ``n_features`` features."""
        if self.mode == FIXED:
            return FeatureThreshold(FIXED, self.psi_threshold, self.reset_below)
        n_grid = _n_on_grid(max(int(n), 1))
        memo = self._memo.setdefault(profile, {})
        found = memo.get((n_grid, n_features))
        if found is None:
            alarm, reset = _null(profile, n_grid, (self.false_alarm_rate / n_features, self.reset_rate / n_features),
                                 reference_size(profile, n_grid), self.eps, self.draws, self.max_draws)
            found = memo[(n_grid, n_features)] = FeatureThreshold(CALIBRATED, alarm.psi, min(reset.psi, alarm.psi),
                                                                  alarm.js)
        return found

    def for_window(self, profile: ReferenceProfile, n: int, features=None) -> dict[str, FeatureThreshold]:
        """Thresholds of ``features`` (default: all of the profile's) in a window of ``n`` events;
        Bonferroni over those features."""
        names = list(profile.features) if features is None else list(features)
        return {f: self.for_feature(profile.features[f], n, len(names)) for f in names}
