"""Drift math for the drift-detector service: pure logic, no I/O.

* :mod:`~driftline.drift.profile`: reference bins and proportions from training data.
* :mod:`~driftline.drift.psi`: PSI and its bands, JS distance, Wasserstein, chi-square.
* :mod:`~driftline.drift.window_spec`: tumbling/hopping windows by count or event time.
* :mod:`~driftline.drift.profile_counter`: bin counts per window of a version's live stream.
* :mod:`~driftline.drift.window_stats`: a closed window's counts and statistics.
* :mod:`~driftline.drift.coverage`: label coverage and label delay per window.
* :mod:`~driftline.drift.detectors`: river's concept drift detectors over the error stream.
* :mod:`~driftline.drift.policy`: when drift becomes a retrain request, and what its outcome changes.
"""

from driftline.drift.detectors import ConceptDriftDetector
from driftline.drift.policy import AlertPolicy, RetrainDecision, Trigger
from driftline.drift.profile import SCORE, FeatureProfile, ReferenceProfile
# The function psi is not re-exported here: it would shadow the module driftline.drift.psi.
# Use `from driftline.drift.psi import psi`.
from driftline.drift.psi import (
    ChiSquare,
    FeatureStats,
    chi_square,
    feature_stats,
    js_distance,
    psi_band,
    wasserstein,
)
from driftline.drift.coverage import CoverageWindow, LabelCoverage
from driftline.drift.profile_counter import EventCounts, WindowedProfileCounter
from driftline.drift.window_spec import WindowSpec
from driftline.drift.window_stats import ClosedWindow, WindowStats

__all__ = [
    "SCORE",
    "AlertPolicy",
    "ChiSquare",
    "ClosedWindow",
    "ConceptDriftDetector",
    "CoverageWindow",
    "EventCounts",
    "FeatureProfile",
    "FeatureStats",
    "LabelCoverage",
    "ReferenceProfile",
    "RetrainDecision",
    "Trigger",
    "WindowSpec",
    "WindowStats",
    "WindowedProfileCounter",
    "chi_square",
    "feature_stats",
    "js_distance",
    "psi_band",
    "wasserstein",
]
