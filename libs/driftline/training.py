"""Training a model version: fit a recipe, profile its training data, fingerprint the data.

Shared by the demo's first model and the retrainer's challengers, so every
version in the registry carries the same kind of lineage and reference profile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from driftline.contract import FeatureContract
from driftline.drift.profile import ReferenceProfile
from driftline.models import build_pipeline


@dataclass(frozen=True)
class Trained:
    estimator: Any
    profile: dict[str, Any]
    data_sha256: str
    rows: int


def data_sha256(frame: pd.DataFrame, labels: np.ndarray) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    digest.update("\x1f".join(map(str, labels)).encode())
    return digest.hexdigest()


def reference_profile(estimator: Any, contract: FeatureContract, frame: pd.DataFrame) -> dict[str, Any]:
    """Bins and proportions of every feature and of the positive-class score on ``frame``."""
    score = estimator.predict_proba(frame)[:, -1]
    profile = ReferenceProfile.fit(
        numeric={n: frame[n].to_numpy(dtype=float) for n in contract.numeric},
        categorical={c: frame[c].to_numpy(dtype=object) for c in contract.categorical},
        score=score,
    )
    return profile.to_dict()


def train(recipe: dict[str, Any], contract: FeatureContract, frame: pd.DataFrame, labels: np.ndarray) -> Trained:
    estimator = build_pipeline(recipe, contract).fit(frame, labels)
    return Trained(estimator, reference_profile(estimator, contract, frame), data_sha256(frame, labels), len(frame))


def classification_metrics(estimator: Any, frame: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, log loss and (two classes) ROC AUC of ``estimator`` on labelled data."""
    probabilities = estimator.predict_proba(frame)
    classes = [str(c) for c in estimator.classes_]
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    metrics = {"accuracy": float(accuracy_score(labels, predicted)), "rows": int(len(labels))}
    if set(labels) <= set(classes):
        metrics["log_loss"] = float(log_loss(labels, probabilities, labels=classes))
        if len(classes) == 2 and len(set(labels)) == 2:
            metrics["roc_auc"] = float(roc_auc_score(labels == classes[1], probabilities[:, 1]))
    return metrics
