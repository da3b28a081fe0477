"""Model recipes (a scikit-learn pipeline spec kept in the registry) and vectorization.

A recipe is plain JSON so that the retrainer can rebuild the same pipeline for
a challenger: ``{"estimator": "logistic_regression", "params": {"C": 1.0}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftline.contract import FeatureContract

ESTIMATORS = {
    "logistic_regression": LogisticRegression,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
}

DEFAULT_RECIPE = {"estimator": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}}


def build_pipeline(recipe: dict[str, Any], contract: FeatureContract) -> Pipeline:
    """An unfitted pipeline: impute and scale numeric features, one-hot categorical ones."""
    try:
        estimator = ESTIMATORS[recipe["estimator"]](**recipe.get("params", {}))
    except KeyError:
        raise ValueError(f"unknown estimator in recipe {recipe!r}; choose from {sorted(ESTIMATORS)}") from None
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    columns = ColumnTransformer(
        [("numeric", numeric, list(contract.numeric)),
         ("categorical", OneHotEncoder(handle_unknown="ignore"), list(contract.categorical))]
    )
    return Pipeline([("features", columns), ("model", estimator)])


def to_frame(contract: FeatureContract, numeric: Sequence[dict[str, float]], categorical: Sequence[dict[str, str]]) -> pd.DataFrame:
    """The model's input: one column per contract feature, NaN / "" where a value is absent."""
    columns: dict[str, Any] = {}
    for name in contract.numeric:
        columns[name] = np.fromiter((row.get(name, np.nan) for row in numeric), dtype=np.float64, count=len(numeric))
    for name in contract.categorical:
        columns[name] = np.array([row.get(name, "") for row in categorical], dtype=object)
    return pd.DataFrame(columns)


def positive_scores(estimator: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(probability per class, n x k) and the class labels as strings."""
    probabilities = estimator.predict_proba(frame)
    classes = np.array([str(c) for c in estimator.classes_], dtype=object)
    return probabilities, classes
