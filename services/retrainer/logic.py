"""Retrainer: train a challenger on recent labelled data and decide whether it beats the champion.

Pure logic. Both models are scored on the same holdout, the most recent
``holdout_fraction`` of the labelled rows (a time-based split: the challenger
never trains on the period it is judged on). The challenger is promoted only
if its accuracy beats the champion's by at least ``margin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftline.registry import LoadedModel
from driftline.training import Trained, classification_metrics, train


@dataclass(frozen=True)
class LabelledData:
    frame: pd.DataFrame  # one column per contract feature
    labels: np.ndarray  # true class as str
    event_time_ms: np.ndarray
    sql: str  # the query that produced it, for lineage


@dataclass(frozen=True)
class Verdict:
    challenger: Trained
    promote: bool
    reason: str
    metrics: dict[str, Any]  # challenger's and champion's, on the same holdout
    train_rows: int
    holdout_rows: int
    holdout_from_ms: int


class Retrainer:
    """
    Parameters
    ----------
    margin
        Accuracy the challenger must gain over the champion on the holdout to be promoted.
    holdout_fraction
        Most recent share of the rows kept for evaluation.
    min_rows
        Labelled rows needed before a challenger is trained at all.
    """

    def __init__(self, margin: float = 0.01, holdout_fraction: float = 0.3, min_rows: int = 3000):
        if not 0 < holdout_fraction < 1:
            raise ValueError("holdout_fraction must be between 0 and 1")
        self.margin = margin
        self.holdout_fraction = holdout_fraction
        self.min_rows = min_rows

    def enough(self, rows: int) -> bool:
        return rows >= self.min_rows

    def evaluate(self, data: LabelledData, champion: LoadedModel) -> Verdict:
        if not self.enough(len(data.labels)):
            raise ValueError(f"{len(data.labels)} labelled rows; the retrainer needs {self.min_rows}")
        order = np.argsort(data.event_time_ms, kind="stable")
        cut = int(len(order) * (1 - self.holdout_fraction))
        fit_rows, holdout_rows = order[:cut], order[cut:]
        fit_frame, holdout = data.frame.iloc[fit_rows], data.frame.iloc[holdout_rows]
        fit_labels, holdout_labels = data.labels[fit_rows], data.labels[holdout_rows]

        challenger = train(champion.meta.recipe, champion.meta.contract, fit_frame.reset_index(drop=True), fit_labels)
        mine = classification_metrics(challenger.estimator, holdout, holdout_labels)
        theirs = classification_metrics(champion.estimator, holdout, holdout_labels)
        gain = mine["accuracy"] - theirs["accuracy"]
        promote = gain >= self.margin
        reason = (
            f"challenger accuracy {mine['accuracy']:.4f} vs champion v{champion.meta.version} "
            f"{theirs['accuracy']:.4f} on the same {len(holdout_rows)} most recent rows: gain {gain:+.4f}, "
            f"{'meets' if promote else 'below'} the margin {self.margin:.4f}"
        )
        metrics = {**{f"holdout_{k}": v for k, v in mine.items()},
                   **{f"champion_holdout_{k}": v for k, v in theirs.items()}}
        return Verdict(challenger, promote, reason, metrics, len(fit_rows), len(holdout_rows),
                       int(data.event_time_ms[holdout_rows].min()))
