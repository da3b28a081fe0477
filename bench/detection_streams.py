"""Synthetic streams with known change points for the detection benchmark.

Concept changes come from river's synthetic generators (SEA, Agrawal, Hyperplane),
switched with :class:`river.datasets.synth.ConceptDriftStream` at a known position and
width; covariate shifts move the mean of one feature by a given number of standard
deviations (numpy), under a fixed concept that a linear model only approximates, so
the shift costs accuracy. Every stream is seeded: the same scenario and seed give the
same events, so every concept detector is measured on exactly the same data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from river.datasets import synth

from driftline.contract import FeatureContract
from driftline.models import DEFAULT_RECIPE


@dataclass(frozen=True)
class Stream:
    """One labelled stream: ``train_rows`` rows to train the first model, then the live events.

    ``change_start`` / ``change_end`` are live-event indices (0 = first live event):
    the change begins at ``change_start`` and is complete at ``change_end`` (equal for an
    abrupt change); both None for a stationary stream.
    """

    name: str
    kind: str  # "concept", "covariate" or "stationary"
    contract: FeatureContract
    recipe: dict
    train: pd.DataFrame
    train_labels: np.ndarray
    live: pd.DataFrame
    live_labels: np.ndarray  # classes as str
    change_start: int | None
    change_end: int | None
    description: str = field(default="")


@dataclass(frozen=True)
class Scenario:
    """A recipe for a :class:`Stream`: ``make(seed, train_rows, pre, post)``."""

    name: str
    kind: str
    description: str

    def make(self, seed: int, train_rows: int, pre: int, post: int) -> Stream:
        return _MAKERS[self.name](self, seed, train_rows, pre, post)


HGB_RECIPE = {"estimator": "hist_gradient_boosting", "params": {"max_iter": 60}}


def _river_stream(scenario: Scenario, before, after, seed: int, train_rows: int, pre: int, post: int,
                  width: int, recipe: dict) -> Stream:
    """``before`` until ``train_rows + pre``, then ``after``, switched over ``width`` events."""
    if width > 1:
        position = train_rows + pre + width // 2  # ConceptDriftStream centres its sigmoid on position
        drifting = synth.ConceptDriftStream(stream=before, drift_stream=after, position=position, width=width,
                                            seed=seed)
    else:
        # river 0.26's ConceptDriftStream overflows (math.exp) for width 1 far from the position:
        # an abrupt change is the two generators one after the other.
        drifting = itertools.chain(itertools.islice(before, train_rows + pre), after)
    rows, labels = [], []
    for x, y in itertools.islice(drifting, train_rows + pre + post):
        rows.append(x)
        labels.append(str(int(y)))
    frame = pd.DataFrame(rows).astype(np.float64)
    frame.columns = [_column_name(scenario.name, c) for c in frame.columns]
    contract = FeatureContract(numeric=tuple(frame.columns))
    labels = np.asarray(labels, dtype=object)
    return Stream(scenario.name, scenario.kind, contract, recipe,
                  frame.iloc[:train_rows].reset_index(drop=True), labels[:train_rows],
                  frame.iloc[train_rows:].reset_index(drop=True), labels[train_rows:],
                  pre, pre + width - 1 if width > 1 else pre, scenario.description)


def _column_name(scenario: str, column) -> str:
    # SEA and Hyperplane name their features 0, 1, ...: give them names of their own
    return f"{scenario.split('_')[0]}_x{column}" if isinstance(column, int) else str(column)


def _sea(scenario: Scenario, seed, train_rows, pre, post, width=1):
    return _river_stream(scenario, synth.SEA(variant=0, noise=0.05, seed=seed),
                         synth.SEA(variant=3, noise=0.05, seed=seed + 1000), seed, train_rows, pre, post, width,
                         DEFAULT_RECIPE)


def _agrawal(scenario: Scenario, seed, train_rows, pre, post, width=1):
    return _river_stream(scenario, synth.Agrawal(classification_function=1, seed=seed),
                         synth.Agrawal(classification_function=4, seed=seed + 1000), seed, train_rows, pre, post,
                         width, HGB_RECIPE)


def _hyperplane(scenario: Scenario, seed, train_rows, pre, post, width=1):
    # Two hyperplanes with different random weights: the boundary turns at the change.
    return _river_stream(scenario, synth.Hyperplane(seed=seed, n_features=5, noise_percentage=0.05),
                         synth.Hyperplane(seed=seed + 1000, n_features=5, noise_percentage=0.05), seed,
                         train_rows, pre, post, width, DEFAULT_RECIPE)


def _covariate(scenario: Scenario, seed, train_rows, pre, post, shift_sd: float = 0.0):
    """Four standard normal features; the label follows a curved boundary in (f0, f1)
    that logistic regression fits as a line around where the training data lies.
    From the change on, ``f0``'s mean moves by ``shift_sd`` standard deviations."""
    rng = np.random.default_rng(seed)
    n = train_rows + pre + post
    x = rng.normal(0.0, 1.0, (n, 4))
    if shift_sd:
        x[train_rows + pre:, 0] += shift_sd
    logit = 3.0 * (x[:, 1] - 0.6 * x[:, 0] ** 2 + 0.4 * x[:, 0] + 0.5)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int).astype(str).astype(object)
    frame = pd.DataFrame(x, columns=[f"cov_f{i}" for i in range(4)])
    contract = FeatureContract(numeric=tuple(frame.columns))
    change = pre if shift_sd else None
    return Stream(scenario.name, scenario.kind, contract, DEFAULT_RECIPE,
                  frame.iloc[:train_rows].reset_index(drop=True), y[:train_rows],
                  frame.iloc[train_rows:].reset_index(drop=True), y[train_rows:], change, change,
                  scenario.description)


SCENARIOS = [
    Scenario("sea_abrupt", "concept", "SEA variant 0 -> 3 (threshold 8 -> 9.5), 5 % label noise, abrupt"),
    Scenario("sea_gradual", "concept", "SEA variant 0 -> 3, 5 % label noise, over 4,000 events"),
    Scenario("agrawal_abrupt", "concept", "Agrawal function 1 -> 4, abrupt (gradient boosting model)"),
    Scenario("hyperplane_abrupt", "concept", "Hyperplane, 5 features, new random weights, 5 % noise, abrupt"),
    Scenario("covariate_0.1sd", "covariate", "mean of cov_f0 +0.1 sd, curved boundary, linear model"),
    Scenario("covariate_0.2sd", "covariate", "mean of cov_f0 +0.2 sd"),
    Scenario("covariate_0.5sd", "covariate", "mean of cov_f0 +0.5 sd"),
    Scenario("covariate_1.0sd", "covariate", "mean of cov_f0 +1.0 sd"),
]
STATIONARY = Scenario("stationary", "stationary", "the covariate stream without a shift")

_MAKERS = {
    "sea_abrupt": _sea,
    "sea_gradual": lambda s, *a: _sea(s, *a, width=4000),
    "agrawal_abrupt": _agrawal,
    "hyperplane_abrupt": _hyperplane,
    "covariate_0.1sd": lambda s, *a: _covariate(s, *a, shift_sd=0.1),
    "covariate_0.2sd": lambda s, *a: _covariate(s, *a, shift_sd=0.2),
    "covariate_0.5sd": lambda s, *a: _covariate(s, *a, shift_sd=0.5),
    "covariate_1.0sd": lambda s, *a: _covariate(s, *a, shift_sd=1.0),
    "stationary": lambda s, *a: _covariate(s, *a, shift_sd=0.0),
}


def scenario(name: str) -> Scenario:
    """The scenario called ``name`` (the stationary one included)."""
    for s in [*SCENARIOS, STATIONARY]:
        if s.name == name:
            return s
    raise ValueError(f"unknown scenario {name!r}; choose one of {[s.name for s in [*SCENARIOS, STATIONARY]]}")
