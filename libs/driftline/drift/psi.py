"""Population Stability Index and the other per-window distribution statistics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as _sps
from scipy.special import chdtrc, rel_entr

from driftline.drift.profile import FeatureProfile

if TYPE_CHECKING:
    from driftline.drift.calibration import FeatureThreshold

__all__ = [
    "DEFAULT_EPS",
    "MONITOR",
    "ACT",
    "psi",
    "psi_band",
    "js_distance",
    "wasserstein",
    "chi_square",
    "ChiSquare",
    "FeatureStats",
    "feature_stats",
]

DEFAULT_EPS = 1e-4
"""Proportion given to an empty bin (see :func:`psi`)."""

MONITOR = 0.10
"""PSI from which a feature is in the "monitor" band."""

ACT = 0.25
"""PSI from which a feature is in the "act" band."""


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if not total > 0:
        raise ValueError("no observations: the counts sum to 0")
    return counts / total


def psi(actual_counts: np.ndarray, expected_proportions: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """Population Stability Index of observed bin counts against reference proportions.

    PSI = Σᵢ (aᵢ − eᵢ) · ln(aᵢ / eᵢ), where ``a`` are the proportions of
    ``actual_counts`` and ``e`` the ``expected_proportions``, over the same bins.

    **Epsilon.** A bin whose proportion is exactly 0 (on either side) gets the
    proportion ``eps`` instead; non-zero proportions are used as they are, even below
    ``eps``, and neither side is renormalised afterwards (so a side with empty bins
    sums to slightly more than 1). A bin empty on both sides contributes exactly 0.
    This is the convention of Evidently's PSI when its smallest non-zero proportion
    is above ``eps``. With the default ``eps = 1e-4`` a bin holding 10 % of the
    reference that goes empty adds (1e-4 − 0.1) · ln(1e-3) ≈ 0.69.

    Parameters
    ----------
    actual_counts
        Counts of the live window in each bin.
    expected_proportions
        Reference proportion of each bin (from :class:`FeatureProfile`).
    eps
        Proportion substituted for empty bins.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.drift.psi import psi, psi_band

    >>> round(psi(np.array([25, 25, 25, 25]), np.array([0.25, 0.25, 0.25, 0.25])), 12)
    0.0
    >>> value = psi(np.array([10, 20, 30, 40]), np.array([0.25, 0.25, 0.25, 0.25]))
    >>> round(value, 4), psi_band(value)
    (0.2282, 'monitor')
    >>> round(psi(np.array([0, 50, 50, 0]), np.array([0.25, 0.25, 0.25, 0.25])), 4)
    4.257

    References
    ----------
    [^1]: Yurdakul, B. (2018). Statistical Properties of Population Stability Index.
    Western Michigan University, dissertation 3208.
    [^2]: Siddiqi, N. (2006). Credit Risk Scorecards. Wiley, pp. 136-138.

    """
    a = _proportions(actual_counts)
    e = np.asarray(expected_proportions, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"{a.size} counts for {e.size} expected proportions")
    a = np.where(a == 0.0, eps, a)
    e = np.where(e == 0.0, eps, e)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_band(value: float) -> str:
    """``"stable"`` below 0.10, ``"monitor"`` from 0.10 to below 0.25, ``"act"`` from 0.25.

    >>> [psi_band(v) for v in (0.0, 0.0999, 0.10, 0.2499, 0.25, 3.0)]
    ['stable', 'stable', 'monitor', 'monitor', 'act', 'act']

    """
    if math.isnan(value):
        raise ValueError("PSI is NaN")
    if value >= ACT:
        return "act"
    if value >= MONITOR:
        return "monitor"
    return "stable"


def js_distance(actual_counts: np.ndarray, expected_proportions: np.ndarray) -> float:
    """Jensen–Shannon distance, base 2, between the window's and the reference proportions.

    The square root of the JS divergence with base-2 logarithms, so it lies in [0, 1]
    (0: same distribution, 1: disjoint supports). Computed with
    ``scipy.spatial.distance.jensenshannon(a, e, base=2)`` on the raw proportions
    (the same formula, written out: scipy's wrapper costs more than the arithmetic):
    no epsilon is needed, JS is finite with empty bins.

    >>> round(js_distance(np.array([5, 5]), np.array([0.5, 0.5])), 12)
    0.0
    >>> round(js_distance(np.array([10, 0]), np.array([0.0, 1.0])), 12)
    1.0

    """
    a = _proportions(actual_counts)
    e = np.asarray(expected_proportions, dtype=np.float64)
    e = e / e.sum()
    mid = (a + e) / 2.0
    divergence = (np.sum(rel_entr(a, mid)) + np.sum(rel_entr(e, mid))) / 2.0
    return float(np.sqrt(max(divergence, 0.0) / math.log(2.0)))


def wasserstein(sample: np.ndarray, reference_quantiles: np.ndarray) -> float:
    """Wasserstein-1 distance between a window sample and the reference quantiles.

    ``scipy.stats.wasserstein_distance`` between the finite values of ``sample`` (a
    bounded uniform sample of the window) and the stored reference quantiles, each
    quantile weighted equally, i.e. an approximation of the reference distribution by
    its evenly spaced quantiles. In the feature's own units; returns NaN when either
    side has no finite value.

    >>> q = np.linspace(0.0, 1.0, 101)
    >>> round(wasserstein(np.linspace(0.0, 1.0, 101), q), 12)
    0.0
    >>> round(wasserstein(np.linspace(0.0, 1.0, 101) + 2.0, q), 12)
    2.0

    """
    x = np.asarray(sample, dtype=np.float64)
    x = x[np.isfinite(x)]
    q = np.asarray(reference_quantiles, dtype=np.float64)
    if x.size == 0 or q.size == 0:
        return math.nan
    return float(_sps.wasserstein_distance(x, q))


@dataclass(frozen=True)
class ChiSquare:
    """Result of :func:`chi_square`."""

    statistic: float
    pvalue: float
    dof: int


def chi_square(actual_counts: np.ndarray, expected_proportions: np.ndarray, eps: float = DEFAULT_EPS) -> ChiSquare:
    """Pearson chi-square goodness-of-fit of the window counts to the reference proportions.

    Bins empty on both sides are left out (they carry no information and would only
    add degrees of freedom). Among the remaining bins, a reference proportion of 0
    (typically the unseen-category or missing bin) is replaced by ``eps``; the expected
    proportions are then renormalised to sum to 1, since
    ``scipy.stats.chisquare`` requires the observed and expected totals to agree.
    ``dof`` is the number of bins kept minus one. Computed as ``scipy.stats.chisquare``
    does (Pearson's statistic, ``chi2.sf`` p-value), without its per-call overhead.

    >>> r = chi_square(np.array([50, 50]), np.array([0.5, 0.5]))
    >>> r.statistic, r.pvalue, r.dof
    (0.0, 1.0, 1)
    >>> chi_square(np.array([90, 10, 0]), np.array([0.5, 0.5, 0.0])).pvalue < 1e-10
    True

    """
    obs = np.asarray(actual_counts, dtype=np.float64)
    e = np.asarray(expected_proportions, dtype=np.float64)
    n = obs.sum()
    if not n > 0:
        raise ValueError("no observations: the counts sum to 0")
    keep = (obs > 0) | (e > 0)
    obs, e = obs[keep], e[keep]
    if obs.size < 2:
        return ChiSquare(0.0, 1.0, 0)
    e = np.where(e == 0.0, eps, e)
    e = e / e.sum()
    f_exp = e * n
    statistic = float(np.sum((obs - f_exp) ** 2 / f_exp))
    dof = int(obs.size - 1)
    return ChiSquare(statistic, float(chdtrc(dof, statistic)), dof)


@dataclass(frozen=True)
class FeatureStats:
    """All statistics of one feature in one window.

    ``wasserstein`` (in feature units) and ``wasserstein_norm`` (divided by the
    reference standard deviation, when that is > 0) are set for numeric features;
    ``chi2``, ``chi2_pvalue`` and ``chi2_dof`` for categorical ones; the others are None.

    The alarm decision in force for this window travels with the statistics (see
    :mod:`driftline.drift.calibration`): ``threshold`` (PSI at or above which the
    window counts as drifted), ``reset_below`` (PSI below which an incident may end),
    ``js_threshold`` (JS distance at the same false-alarm rate; calibrated mode only)
    and ``threshold_mode`` (``"fixed"`` or ``"calibrated"``; ``""`` when none was given).
    ``band`` is always the fixed band of :func:`psi_band`.
    """

    feature: str
    kind: str
    n: int
    psi: float
    band: str
    js: float
    wasserstein: float | None = None
    wasserstein_norm: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    chi2_dof: int | None = None
    threshold: float | None = None
    threshold_mode: str = ""
    reset_below: float | None = None
    js_threshold: float | None = None

    def to_dict(self) -> dict:
        """JSON-able dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def feature_stats(
    profile: FeatureProfile,
    counts: np.ndarray,
    sample: np.ndarray | None = None,
    eps: float = DEFAULT_EPS,
    threshold: FeatureThreshold | None = None,
) -> FeatureStats:
    """PSI, band, JS distance and Wasserstein (numeric) or chi-square (categorical).

    Parameters
    ----------
    profile
        The feature's reference profile.
    counts
        The window's bin counts, in the profile's bins.
    sample
        A bounded sample of the window's raw values (numeric features only), for the
        Wasserstein distance; skipped when None.
    eps
        Passed to :func:`psi` and :func:`chi_square`.
    threshold
        The alarm levels in force (from
        :meth:`driftline.drift.calibration.ThresholdRule.for_feature`), carried in the result.

    >>> import numpy as np
    >>> from driftline.drift.profile import FeatureProfile
    >>> fp = FeatureProfile.fit_categorical("c", np.array(list("aabb")))
    >>> s = feature_stats(fp, np.array([1, 1, 2, 0]))
    >>> s.band, round(s.psi, 3), s.chi2_dof
    ('act', 4.604, 2)

    """
    counts = np.asarray(counts)
    value = psi(counts, profile.expected, eps=eps)
    kw: dict = {}
    if profile.kind == "numeric":
        if sample is not None and profile.quantiles is not None:
            w = wasserstein(sample, profile.quantiles)
            kw["wasserstein"] = w
            if profile.std and not math.isnan(w):
                kw["wasserstein_norm"] = w / profile.std
    else:
        c = chi_square(counts, profile.expected, eps=eps)
        kw.update(chi2=c.statistic, chi2_pvalue=c.pvalue, chi2_dof=c.dof)
    if threshold is not None:
        kw.update(threshold=threshold.psi, threshold_mode=threshold.mode, reset_below=threshold.reset_below,
                  js_threshold=threshold.js)
    return FeatureStats(
        feature=profile.name,
        kind=profile.kind,
        n=int(counts.sum()),
        psi=value,
        band=psi_band(value),
        js=js_distance(counts, profile.expected),
        **kw,
    )
