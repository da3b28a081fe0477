"""Retrainer: train a challenger on recent labelled data and decide whether it beats the champion.

Pure logic. Both models are scored on the same holdout, the most recent
``holdout_fraction`` of the labelled rows (a time-based split: the challenger
never trains on the period it is judged on). The challenger is promoted only
if it beats the champion on the gate metric by at least ``margin``: accuracy
for classification (binary or multiclass), mean absolute error for regression
(lower is better), or the metric named by ``metric``.

The challenger is built from the champion's recipe; a champion registered
without one (trained elsewhere: recipe ``{}`` or ``{"refit": "clone"}``) is
refitted as ``sklearn.base.clone`` of its own pipeline.

The challenger's reference profile (features and score) is made on the same
holdout: rows it did not train on, and the most recent ones, so the closest to
the live data it will be compared with. A profile of its own training rows made
a promoted challenger look drifted in every later window (issue 11: score PSI
0.39 for a random forest on 2,100 rows of an unchanged distribution; 0.58 for a
logistic regression whose training rows began before the change), and raised
incidents and retrains of a model that was fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftline.registry import LoadedModel
from driftline.training import Trained, evaluation_metrics, train

#: Gate metrics and whether a larger value is better.
HIGHER_IS_BETTER = {"accuracy": True, "roc_auc": True, "log_loss": False, "mae": False, "rmse": False}
DEFAULT_METRIC = {"classification": "accuracy", "regression": "mae"}


@dataclass(frozen=True)
class LabelledData:
    frame: pd.DataFrame  # one column per contract feature
    labels: np.ndarray  # true class as str (classification) or true value as float (regression)
    event_time_ms: np.ndarray
    sql: str  # the query that produced it, for lineage
    rows_needed: int = 0  # the request's need (RowFloor); 0: the Retrainer's own min_rows


@dataclass(frozen=True)
class Verdict:
    challenger: Trained
    promote: bool
    reason: str
    metrics: dict[str, Any]  # challenger's and champion's, on the same holdout
    train_rows: int
    holdout_rows: int
    holdout_from_ms: int
    holdout_to_ms: int = 0


class Retrainer:
    """
    Parameters
    ----------
    margin
        What the challenger must gain over the champion on the holdout to be promoted, in
        units of the gate metric (accuracy points, or MAE units for regression).
    holdout_fraction
        Most recent share of the rows kept for evaluation.
    min_rows
        Labelled rows needed before a challenger is trained at all, when the data carries no
        need of its own (``LabelledData.rows_needed``, set by the service from its
        :class:`~driftline.services.retrainer.floor.RowFloor`).
    metric
        Gate metric (a key of ``HIGHER_IS_BETTER``); None means the task's default,
        accuracy for classification and MAE for regression.
    """

    def __init__(self, margin: float = 0.01, holdout_fraction: float = 0.3, min_rows: int = 3000,
                 metric: str | None = None):
        if not 0 < holdout_fraction < 1:
            raise ValueError("holdout_fraction must be between 0 and 1")
        if metric is not None and metric not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown retrain metric {metric!r}; choose from {sorted(HIGHER_IS_BETTER)}")
        self.margin = margin
        self.holdout_fraction = holdout_fraction
        self.min_rows = min_rows
        self.metric = metric

    def metric_for(self, task: str) -> str:
        """The gate metric for a model of ``task``."""
        return self.metric or DEFAULT_METRIC.get(task, "accuracy")

    def enough(self, rows: int) -> bool:
        return rows >= self.min_rows

    def gate(self, mine: dict[str, Any], theirs: dict[str, Any], task: str, champion_version: int) -> tuple[bool, str]:
        """Whether the challenger (``mine``) beats the champion (``theirs``) on the same holdout, and why.

        Raises ValueError when the gate metric is not among the metrics (a task or holdout without it).
        """
        metric = self.metric_for(task)
        if metric not in mine or metric not in theirs:
            raise ValueError(f"gate metric {metric!r} is not available for a {task} model on this "
                             f"holdout; it has {sorted(k for k in mine if k != 'rows')}")
        # gain > 0 always means "the challenger is better", whichever way the metric points
        gain = mine[metric] - theirs[metric] if HIGHER_IS_BETTER[metric] else theirs[metric] - mine[metric]
        promote = gain >= self.margin
        direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
        reason = (
            f"challenger {metric} {mine[metric]:.4f} vs champion v{champion_version} "
            f"{theirs[metric]:.4f} on the same {mine.get('rows', '?')} most recent rows ({direction} is better): "
            f"gain {gain:+.4f}, {'meets' if promote else 'below'} the margin {self.margin:.4f}"
        )
        return promote, reason

    def evaluate(self, data: LabelledData, champion: LoadedModel) -> Verdict:
        """Train a challenger on the older rows; gate it and profile it on the most recent ones.

        Raises ValueError when there are fewer rows than ``data.rows_needed`` (the request's
        need, :class:`~driftline.services.retrainer.floor.RowFloor`), or ``min_rows`` without one.
        """
        needed = data.rows_needed or self.min_rows
        if len(data.labels) < needed:
            raise ValueError(f"{len(data.labels)} labelled rows; the retrainer needs {needed}")
        order = np.argsort(data.event_time_ms, kind="stable")
        cut = int(len(order) * (1 - self.holdout_fraction))
        fit_rows, holdout_rows = order[:cut], order[cut:]
        fit_frame, holdout = data.frame.iloc[fit_rows], data.frame.iloc[holdout_rows]
        fit_labels, holdout_labels = data.labels[fit_rows], data.labels[holdout_rows]

        contract = champion.meta.contract
        if contract.task != "regression":
            classes = sorted({str(label) for label in fit_labels})
            if len(classes) < 2:  # say it in our words, not the solver's
                raise ValueError(f"the {len(fit_rows)} training rows hold one class only ({', '.join(classes) or 'none'}); "
                                 f"a classifier needs labels of at least 2 classes")
        challenger = train(champion.meta.recipe, contract, fit_frame.reset_index(drop=True), fit_labels,
                           template=champion.estimator, reference=holdout.reset_index(drop=True))
        mine = evaluation_metrics(challenger.estimator, contract, holdout, holdout_labels)
        theirs = evaluation_metrics(champion.estimator, contract, holdout, holdout_labels)
        promote, reason = self.gate(mine, theirs, contract.task, champion.meta.version)
        metrics = {**{f"holdout_{k}": v for k, v in mine.items()},
                   **{f"champion_holdout_{k}": v for k, v in theirs.items()}}
        held_times = data.event_time_ms[holdout_rows]
        return Verdict(challenger, promote, reason, metrics, len(fit_rows), len(holdout_rows),
                       int(held_times.min()), int(held_times.max()))
