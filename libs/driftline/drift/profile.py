"""Reference profiles: the training-data distributions that live data is compared with."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FeatureProfile", "ReferenceProfile", "SCORE", "MISSING", "UNSEEN"]

SCORE = "__score__"
"""Name under which the prediction score is profiled."""

MISSING = "__missing__"
"""Label of the bin that counts missing values (NaN, None)."""

UNSEEN = "__unseen__"
"""Label of the categorical bin that counts categories absent from the training data."""

_KINDS = ("numeric", "categorical")
_LINEAR_EDGES = 32  # up to this many edges, bin by comparisons instead of binary search


def _missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a value is missing: NaN for float arrays, None or NaN for object arrays."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        # Elementwise in numpy's C loop: `v != v` is True only for NaN-like values.
        return np.asarray((values == None) | (values != values), dtype=bool)  # noqa: E711
    return np.zeros(values.shape, dtype=bool)


def _finite_floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64)]


class FeatureProfile:
    """Fixed bins and reference proportions of one feature (or of the prediction score).

    Bins are fixed once, from the training (reference) data, and never move afterwards:
    every live window is counted into the same bins, so the proportions of a window can
    be compared with ``expected`` bin by bin.

    **Numeric features.** ``edges`` are the training quantiles at ``1/n, 2/n, ... (n-1)/n``
    (NumPy's default linear interpolation, finite training values only), with duplicate
    edges collapsed, so a feature with ties may get fewer than ``n`` value bins. Bins are
    closed on the right and the tails are open: ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``;
    ``-inf`` and ``+inf`` fall into the first and last value bin. One extra bin, always
    the last, counts missing values (NaN). ``n_bins = len(edges) + 2``.

    **Categorical features.** One bin per category seen in training, in sorted order,
    then one bin for categories never seen in training (``UNSEEN``), then one for missing
    values (``MISSING``: ``None`` or NaN), so ``n_bins = len(categories) + 2``. Missing is
    its own bin rather than "unseen", so a broken upstream field shows up as missing.
    Categories are compared by their ``str()`` form: ``1`` and ``"1"`` are the same
    category, ``1.0`` is another one.

    ``expected`` holds the reference proportion of every bin (they sum to 1). Bins that
    were empty in training keep a proportion of 0 here; :func:`driftline.drift.psi.psi`
    decides how to keep them finite. Numeric profiles also keep ``quantiles``, a small
    set of reference quantiles (101 by default), so a Wasserstein distance can be
    computed later without the training data.

    Parameters
    ----------
    name
        Feature name (``SCORE`` for the prediction score).
    kind
        ``"numeric"`` or ``"categorical"``.
    expected
        Reference proportion of each bin.
    edges
        Interior bin edges of a numeric feature, strictly increasing and finite.
    categories
        Training categories of a categorical feature, as strings, sorted.
    quantiles
        Reference quantiles of a numeric feature at evenly spaced levels from 0 to 1.
    n_reference
        Number of training rows the profile was computed from.
    mean, std
        Mean and standard deviation of the finite training values of a numeric feature.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.drift.profile import FeatureProfile

    >>> rng = np.random.default_rng(0)
    >>> fp = FeatureProfile.fit_numeric("age", rng.normal(40, 10, 10_000), n_bins=4)
    >>> fp.n_bins               # 4 value bins and the missing bin
    5
    >>> fp.expected.round(2).tolist()
    [0.25, 0.25, 0.25, 0.25, 0.0]
    >>> fp.bin_indices(np.array([-np.inf, 35.0, 45.0, 1e9, np.nan])).tolist()
    [0, 1, 2, 3, 4]

    >>> fc = FeatureProfile.fit_categorical("country", np.array(["fr", "de", "fr", None], dtype=object))
    >>> fc.labels
    ['de', 'fr', '__unseen__', '__missing__']
    >>> fc.counts(np.array(["fr", "it", None, "de"], dtype=object)).tolist()
    [1, 1, 1, 1]
    >>> FeatureProfile.from_dict(fc.to_dict()).expected.tolist()
    [0.25, 0.5, 0.0, 0.25]

    """

    def __init__(
        self,
        name: str,
        kind: str,
        expected: np.ndarray,
        edges: np.ndarray | None = None,
        categories: list[str] | None = None,
        quantiles: np.ndarray | None = None,
        n_reference: int = 0,
        mean: float | None = None,
        std: float | None = None,
    ):
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        self.name = name
        self.kind = kind
        self.expected = np.asarray(expected, dtype=np.float64)
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.categories = None if categories is None else [str(c) for c in categories]
        self.quantiles = None if quantiles is None else np.asarray(quantiles, dtype=np.float64)
        self.n_reference = int(n_reference)
        self.mean = mean
        self.std = std
        if kind == "numeric":
            if self.edges is None:
                raise ValueError("a numeric profile needs edges")
            if self.edges.size and (not np.all(np.isfinite(self.edges)) or np.any(np.diff(self.edges) <= 0)):
                raise ValueError("edges must be finite and strictly increasing")
        else:
            if self.categories is None:
                raise ValueError("a categorical profile needs categories")
            if self.categories != sorted(set(self.categories)):
                raise ValueError("categories must be unique and sorted")
            self._cat_array = np.array(self.categories, dtype=str)
        if self.expected.shape != (self.n_bins,):
            raise ValueError(f"expected has {self.expected.size} proportions for {self.n_bins} bins")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def fit_numeric(cls, name: str, values: np.ndarray, n_bins: int = 10, n_quantiles: int = 101) -> FeatureProfile:
        """Quantile bins and reference proportions of a numeric training column."""
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            edges = np.unique(np.quantile(finite, np.arange(1, n_bins) / n_bins))
            quantiles = np.quantile(finite, np.linspace(0.0, 1.0, n_quantiles))
            mean, std = float(finite.mean()), float(finite.std())
        else:
            edges, quantiles, mean, std = np.empty(0), None, None, None
        fp = cls(name, "numeric", np.zeros(edges.size + 2), edges=edges, quantiles=quantiles,
                 n_reference=values.size, mean=mean, std=std)
        fp.expected = fp._proportions(values)
        return fp

    @classmethod
    def fit_categorical(cls, name: str, values: np.ndarray) -> FeatureProfile:
        """One bin per training category (plus unseen and missing) and their proportions."""
        values = np.asarray(values)
        present = values[~_missing_mask(values)]
        categories = np.unique(present.astype(str)).tolist() if present.size else []
        fp = cls(name, "categorical", np.zeros(len(categories) + 2), categories=categories,
                 n_reference=values.size)
        fp.expected = fp._proportions(values)
        return fp

    def _proportions(self, values: np.ndarray) -> np.ndarray:
        counts = self.counts(values)
        total = counts.sum()
        return counts / total if total else np.zeros(self.n_bins)

    # -- binning ------------------------------------------------------------------------

    @property
    def n_bins(self) -> int:
        """Number of bins, the missing bin (and the unseen bin) included."""
        if self.kind == "numeric":
            return self.edges.size + 2
        return len(self.categories) + 2

    @property
    def missing_bin(self) -> int:
        """Index of the bin that counts missing values (always the last one)."""
        return self.n_bins - 1

    @property
    def labels(self) -> list[str]:
        """A readable name for every bin."""
        if self.kind == "categorical":
            return [*self.categories, UNSEEN, MISSING]
        bounds = [-math.inf, *self.edges.tolist(), math.inf]
        return [f"({lo:g}, {hi:g}]" if i < len(bounds) - 2 else f"({lo:g}, {hi:g})"
                for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))] + [MISSING]

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        """The bin of every value, as an ``int64`` array of the same length."""
        values = np.asarray(values)
        if self.kind == "numeric":
            x = values.astype(np.float64, copy=False)
            if self.edges.size <= _LINEAR_EDGES:
                # Bin = number of edges strictly below x (NaN compares below none). One
                # branch-free pass per edge beats searchsorted's binary search on unsorted data.
                idx = np.zeros(x.shape, dtype=np.uint8)
                above = np.empty(x.shape, dtype=bool)
                for e in self.edges.tolist():
                    np.greater(x, e, out=above)
                    idx += above
                idx = idx.astype(np.int64)
            else:
                idx = np.searchsorted(self.edges, x, side="left")
            idx[np.isnan(x)] = self.missing_bin
            return idx
        missing = _missing_mask(values)
        if values.dtype.kind == "U":
            strs = values
        elif values.dtype.kind == "S":
            strs = np.char.decode(values, "utf-8")
        else:
            strs = values.astype(str)
        n_cat = len(self.categories)
        if n_cat:
            pos = np.searchsorted(self._cat_array, strs)
            pos_c = np.minimum(pos, n_cat - 1)
            found = (pos < n_cat) & (self._cat_array[pos_c] == strs)
            idx = np.where(found, pos_c, n_cat)
        else:
            idx = np.full(values.shape, n_cat)
        idx[missing] = self.missing_bin
        return idx.astype(np.int64, copy=False)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Bin counts of ``values`` (length ``n_bins``)."""
        return np.bincount(self.bin_indices(values), minlength=self.n_bins)

    # -- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-able description of this profile."""
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "expected": _finite_floats(self.expected),
            "n_reference": self.n_reference,
        }
        if self.kind == "numeric":
            d["edges"] = _finite_floats(self.edges)
            d["quantiles"] = None if self.quantiles is None else _finite_floats(self.quantiles)
            d["mean"] = self.mean
            d["std"] = self.std
        else:
            d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureProfile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            kind=d["kind"],
            expected=np.asarray(d["expected"], dtype=np.float64),
            edges=None if d.get("edges") is None else np.asarray(d["edges"], dtype=np.float64),
            categories=d.get("categories"),
            quantiles=None if d.get("quantiles") is None else np.asarray(d["quantiles"], dtype=np.float64),
            n_reference=d.get("n_reference", 0),
            mean=d.get("mean"),
            std=d.get("std"),
        )

    def __repr__(self) -> str:
        return f"FeatureProfile(name={self.name!r}, kind={self.kind!r}, n_bins={self.n_bins})"


class ReferenceProfile:
    """Reference profiles of all features and of the score of one model version.

    Computed once from the training data and stored with the model version (for
    instance in the registry's lineage) as the JSON-able dict of :meth:`to_dict`.

    Parameters
    ----------
    features
        Profiles by feature name; the prediction score is stored under ``SCORE``.
    model
        Model name the profile belongs to, if known.
    version
        Model version the profile belongs to, if known.

    Examples
    --------
    >>> import json
    >>> import numpy as np
    >>> from driftline.drift.profile import ReferenceProfile

    >>> rng = np.random.default_rng(1)
    >>> prof = ReferenceProfile.fit(
    ...     numeric={"amount": rng.lognormal(3, 1, 5_000)},
    ...     categorical={"channel": rng.choice(["web", "app", "shop"], 5_000)},
    ...     score=rng.uniform(size=5_000),
    ...     model="fraud", version=3,
    ... )
    >>> sorted(prof.features)
    ['__score__', 'amount', 'channel']
    >>> prof.features["amount"].n_bins, prof.features["channel"].n_bins
    (11, 5)
    >>> again = ReferenceProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    >>> again.version, np.array_equal(again.features["amount"].edges, prof.features["amount"].edges)
    (3, True)

    """

    def __init__(self, features: dict[str, FeatureProfile], model: str | None = None, version: Any = None):
        self.features = dict(features)
        self.model = model
        self.version = version

    @classmethod
    def fit(
        cls,
        numeric: dict[str, np.ndarray] | None = None,
        categorical: dict[str, np.ndarray] | None = None,
        score: np.ndarray | None = None,
        n_bins: int = 10,
        *,
        n_quantiles: int = 101,
        model: str | None = None,
        version: Any = None,
    ) -> ReferenceProfile:
        """Profile the training columns: ``n_bins`` quantile bins for numeric ones and the
        score, one bin per category for categorical ones."""
        numeric = numeric or {}
        categorical = categorical or {}
        clash = set(numeric) & set(categorical)
        if clash:
            raise ValueError(f"features both numeric and categorical: {sorted(clash)}")
        if SCORE in numeric or SCORE in categorical:
            raise ValueError(f"{SCORE!r} is reserved for the prediction score")
        features: dict[str, FeatureProfile] = {}
        for name, values in numeric.items():
            features[name] = FeatureProfile.fit_numeric(name, values, n_bins=n_bins, n_quantiles=n_quantiles)
        for name, values in categorical.items():
            features[name] = FeatureProfile.fit_categorical(name, values)
        if score is not None:
            features[SCORE] = FeatureProfile.fit_numeric(SCORE, score, n_bins=n_bins, n_quantiles=n_quantiles)
        return cls(features, model=model, version=version)

    def to_dict(self) -> dict:
        """A JSON-able description of the whole profile."""
        return {
            "format": 1,
            "model": self.model,
            "version": self.version,
            "features": [fp.to_dict() for fp in self.features.values()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> ReferenceProfile:
        """Inverse of :meth:`to_dict`."""
        if d.get("format", 1) != 1:
            raise ValueError(f"unknown profile format {d.get('format')!r}")
        features = {f["name"]: FeatureProfile.from_dict(f) for f in d["features"]}
        return cls(features, model=d.get("model"), version=d.get("version"))

    def __repr__(self) -> str:
        return f"ReferenceProfile(model={self.model!r}, version={self.version!r}, features={list(self.features)})"
