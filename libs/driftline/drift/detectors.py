"""Concept drift over the per-prediction error stream, with river's detectors."""

from __future__ import annotations

import pickle

import numpy as np
from river import drift as river_drift
from river.drift import binary as river_binary

__all__ = ["ConceptDriftDetector", "METHODS", "BINARY_METHODS"]

METHODS = {
    "ADWIN": river_drift.ADWIN,
    "DDM": river_binary.DDM,
    "EDDM": river_binary.EDDM,
    "HDDM_A": river_binary.HDDMA,
    "HDDM_W": river_binary.HDDMW,
    "KSWIN": river_drift.KSWIN,
    "PageHinkley": river_drift.PageHinkley,
}
"""Selectable detectors, by name."""

BINARY_METHODS = frozenset({"DDM", "EDDM", "HDDM_A", "HDDM_W"})
"""Detectors of ``river.drift.binary``: they expect a 0/1 error (1 = wrong prediction)."""

_ALIASES = {k.upper().replace("_", "").replace("-", ""): k for k in METHODS}


def canonical_method(method: str) -> str:
    """The detector's name as in :data:`METHODS` (case, ``_`` and ``-`` ignored); ValueError if unknown."""
    return _canonical(method)


def _canonical(method: str) -> str:
    key = method.upper().replace("_", "").replace("-", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown drift detector {method!r}; choose one of {sorted(METHODS)}")
    return _ALIASES[key]


class ConceptDriftDetector:
    """A river drift detector fed with whole batches of errors, with global indices.

    Concept drift shows in the error of the model on joined labels, not in its inputs.
    This wraps one of river's detectors (ADWIN by default) so that a batch of errors
    goes in and the positions where drift was detected come out, counted from the
    first error this detector ever saw (across batches and restarts). River's
    detectors are sequential by nature, so the batch is fed element by element; the
    error stream (labeled predictions) is much smaller than the feature stream.

    Parameters
    ----------
    method
        ``"ADWIN"``, ``"DDM"``, ``"EDDM"``, ``"HDDM_A"``, ``"HDDM_W"``, ``"KSWIN"`` or
        ``"PageHinkley"`` (case, ``_`` and ``-`` are ignored). DDM, EDDM and HDDM_A/W
        live in ``river.drift.binary`` and accept only 0/1 errors.
    params
        Passed to the river detector's constructor.

    Examples
    --------
    >>> import random
    >>> from driftline.drift.detectors import ConceptDriftDetector

    >>> rng = random.Random(12345)
    >>> data_stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)

    >>> det = ConceptDriftDetector("ADWIN")
    >>> det.update(np.array(data_stream[:700])), det.update(np.array(data_stream[700:]))
    ([], [1023])
    >>> det.n_seen, det.n_detections
    (2000, 1)

    >>> again = ConceptDriftDetector()
    >>> again.restore(det.snapshot())
    >>> again.n_seen, again.method
    (2000, 'ADWIN')

    References
    ----------
    [^1]: Bifet, A., & Gavalda, R. (2007). Learning from time-changing data with
    adaptive windowing. SIAM International Conference on Data Mining, 443-448.
    [^2]: Gama, J., Zliobaite, I., Bifet, A., Pechenizkiy, M., & Bouchachia, A. (2014).
    A survey on concept drift adaptation. ACM Computing Surveys, 46(4), 1-37.

    """

    def __init__(self, method: str = "ADWIN", **params):
        self.method = _canonical(method)
        self.params = dict(params)
        self._detector = METHODS[self.method](**self.params)
        self._n_seen = 0
        self._n_detections = 0
        self._last_index: int | None = None

    @property
    def detector(self):
        """The wrapped river detector."""
        return self._detector

    @property
    def drift_detected(self) -> bool:
        """Whether the last error seen triggered a detection (river's semantics)."""
        return bool(self._detector.drift_detected)

    @property
    def warning_detected(self) -> bool:
        """Whether the last error seen is in a warning zone (binary detectors only)."""
        return bool(getattr(self._detector, "warning_detected", False))

    @property
    def n_seen(self) -> int:
        """Errors seen so far."""
        return self._n_seen

    @property
    def n_detections(self) -> int:
        """Detections so far."""
        return self._n_detections

    @property
    def last_detection(self) -> int | None:
        """Global index of the most recent detection."""
        return self._last_index

    def update(self, errors: np.ndarray) -> list[int]:
        """Feed a batch of errors, in stream order; return the global indices of the
        errors at which drift was detected."""
        x = np.asarray(errors, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise ValueError("errors must be finite")
        if self.method in BINARY_METHODS and not np.all((x == 0.0) | (x == 1.0)):
            raise ValueError(f"{self.method} expects 0/1 errors")
        det = self._detector
        found = []
        base = self._n_seen
        for i, v in enumerate(x.tolist()):
            det.update(v)
            if det.drift_detected:
                found.append(base + i)
        self._n_seen += x.size
        if found:
            self._n_detections += len(found)
            self._last_index = found[-1]
        return found

    def snapshot(self) -> bytes:
        """The detector's state as bytes.

        This is a pickle of the river object: acceptable because it is our own state,
        written and read back by this service only, never a downloaded artifact.
        Never :meth:`restore` bytes from an untrusted source.
        """
        return pickle.dumps({
            "format": 1, "method": self.method, "params": self.params, "n_seen": self._n_seen,
            "n_detections": self._n_detections, "last_index": self._last_index, "detector": self._detector,
        }, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Resume from :meth:`snapshot` (method and parameters come from the snapshot)."""
        state = pickle.loads(data)  # our own state, see snapshot()
        if state.get("format") != 1:
            raise ValueError("unknown detector snapshot format")
        self.method = state["method"]
        self.params = state["params"]
        self._n_seen = state["n_seen"]
        self._n_detections = state["n_detections"]
        self._last_index = state["last_index"]
        self._detector = state["detector"]

    def __repr__(self) -> str:
        return f"ConceptDriftDetector(method={self.method!r}, n_seen={self._n_seen})"
