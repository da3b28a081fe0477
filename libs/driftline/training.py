"""Training a model version: fit a recipe, profile its training data, fingerprint the data.

Shared by the demo's first model and the retrainer's challengers, so every
version in the registry carries the same kind of lineage and reference profile.

The reference profile should come from rows the model did not train on
(``train(..., reference=held_out_rows)``): a model's scores on its own training
rows are more confident than on new data (a random forest's most of all), so a
profile of them makes every later window of live scores look drifted.
The task comes from the contract: classification (binary or multiclass, scored
with ``predict_proba``) or regression (scored with ``predict``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from driftline.contract import FeatureContract
from driftline.drift.profile import ReferenceProfile
from driftline.models import build_pipeline, monitored_score, predicted_values, refits_by_clone


@dataclass(frozen=True)
class Trained:
    estimator: Any
    profile: dict[str, Any]
    data_sha256: str
    rows: int  # training rows
    profile_rows: int = 0  # rows the profile was made from
    profile_in_sample: bool = True  # True when those are the training rows themselves


def data_sha256(frame: pd.DataFrame, labels: np.ndarray) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    digest.update("\x1f".join(map(str, labels)).encode())
    return digest.hexdigest()


def prediction_score(estimator: Any, contract: FeatureContract, frame: pd.DataFrame) -> np.ndarray:
    """The score the predictor publishes (and the drift-detector profiles as ``__score__``).

    Regression: the predicted value. Classification: the positive-class
    probability (two classes) or the predicted class's probability (more).
    """
    if contract.task == "regression":
        return predicted_values(estimator, frame)
    return monitored_score(estimator.predict_proba(frame))


def reference_profile(estimator: Any, contract: FeatureContract, frame: pd.DataFrame) -> dict[str, Any]:
    """Bins and proportions of every feature and of the prediction score on ``frame``."""
    score = prediction_score(estimator, contract, frame)
    profile = ReferenceProfile.fit(
        numeric={n: frame[n].to_numpy(dtype=float) for n in contract.numeric},
        categorical={c: frame[c].to_numpy(dtype=object) for c in contract.categorical},
        score=score,
    )
    return profile.to_dict()


def train(recipe: dict[str, Any], contract: FeatureContract, frame: pd.DataFrame, labels: np.ndarray,
          template: Any = None, *, reference: pd.DataFrame | None = None) -> Trained:
    """Fit ``recipe`` on ``frame`` / ``labels`` (numeric targets for regression).

    A recipe without an estimator (``{}`` or ``{"refit": "clone"}``: a model
    trained elsewhere) refits ``sklearn.base.clone(template)``, the champion's
    own pipeline with its hyper-parameters and none of its fitted state.

    The reference profile is made on ``reference``, rows the model did not train
    on; without it, on the training rows (in-sample, which overstates the score's
    confidence: only for callers that profile elsewhere or have no other rows).
    """
    if refits_by_clone(recipe):
        if template is None:
            raise ValueError(f"recipe {recipe!r} names no estimator and there is no pipeline to clone")
        estimator = clone(template)
    else:
        estimator = build_pipeline(recipe, contract)
    if contract.task == "regression":
        labels = np.asarray(labels, dtype=np.float64)
    estimator.fit(frame, labels)
    profiled = frame if reference is None else reference
    return Trained(estimator, reference_profile(estimator, contract, profiled), data_sha256(frame, labels), len(frame),
                   profile_rows=len(profiled), profile_in_sample=reference is None)


def regression_metrics(estimator: Any, frame: pd.DataFrame, values: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and the mean of the true values of ``estimator`` on labelled data."""
    values = np.asarray(values, dtype=np.float64)
    predicted = predicted_values(estimator, frame)
    return {"mae": float(mean_absolute_error(values, predicted)),
            "rmse": float(np.sqrt(mean_squared_error(values, predicted))),
            "rows": int(len(values))}


def evaluation_metrics(estimator: Any, contract: FeatureContract, frame: pd.DataFrame,
                       labels: np.ndarray) -> dict[str, float]:
    """The task's metrics: :func:`regression_metrics` or :func:`classification_metrics`."""
    if contract.task == "regression":
        return regression_metrics(estimator, frame, labels)
    return classification_metrics(estimator, frame, labels)


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
