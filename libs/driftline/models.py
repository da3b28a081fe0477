"""Model recipes (a scikit-learn pipeline spec kept in the registry) and vectorization.

A recipe is plain JSON so that the retrainer can rebuild the same pipeline for
a challenger: ``{"estimator": "logistic_regression", "params": {"C": 1.0}}``.
A model trained elsewhere has no recipe (``{}``, or ``{"refit": "clone"}``): its
challengers are refits of a clone of the champion's own pipeline
(:func:`refits_by_clone`).

Tasks (``FeatureContract.task``): ``classification`` (two or more classes, the
estimator has ``predict_proba``) and ``regression`` (``predict`` gives the value).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftline.contract import FeatureContract

CLASSIFIERS = {
    "logistic_regression": LogisticRegression,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
}

REGRESSORS = {
    "linear_regression": LinearRegression,
    "ridge": Ridge,
    "hist_gradient_boosting_regressor": HistGradientBoostingRegressor,
    "random_forest_regressor": RandomForestRegressor,
}

ESTIMATORS = {**CLASSIFIERS, **REGRESSORS}

DEFAULT_RECIPE = {"estimator": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}}
DEFAULT_REGRESSION_RECIPE = {"estimator": "ridge", "params": {"alpha": 1.0}}

#: Recipe of a model registered without one: challengers refit a clone of the champion.
CLONE_RECIPE = {"refit": "clone"}


def default_recipe(task: str) -> dict[str, Any]:
    """The recipe used when the user names none, for ``task``."""
    return dict(DEFAULT_REGRESSION_RECIPE if task == "regression" else DEFAULT_RECIPE)


def refits_by_clone(recipe: dict[str, Any] | None) -> bool:
    """True for a recipe that names no estimator: ``{}``, None or ``{"refit": "clone"}``."""
    return not recipe or ("estimator" not in recipe and recipe.get("refit", "clone") == "clone")


def build_pipeline(recipe: dict[str, Any], contract: FeatureContract) -> Pipeline:
    """An unfitted pipeline: impute and scale numeric features, one-hot categorical ones."""
    try:
        estimator_class = ESTIMATORS[recipe["estimator"]]
    except KeyError:
        raise ValueError(f"unknown estimator in recipe {recipe!r}; choose from {sorted(ESTIMATORS)}") from None
    wanted = REGRESSORS if contract.task == "regression" else CLASSIFIERS
    if recipe["estimator"] not in wanted:
        raise ValueError(f"estimator {recipe['estimator']!r} does not fit a {contract.task} contract; "
                         f"choose from {sorted(wanted)}")
    estimator = estimator_class(**recipe.get("params", {}))
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    columns = ColumnTransformer(
        [("numeric", numeric, list(contract.numeric)),
         ("categorical", OneHotEncoder(handle_unknown="ignore"), list(contract.categorical))]
    )
    return Pipeline([("features", columns), ("model", estimator)])


def to_frame(contract: FeatureContract, numeric: Sequence[dict[str, float]], categorical: Sequence[dict[str, str]],
             estimator: Any = None) -> pd.DataFrame:
    """The model's input: one column per contract feature, NaN / "" where a value is absent.

    Columns are the contract's numeric then categorical features, or, given an
    ``estimator`` fitted on named columns, its ``feature_names_in_`` order: a
    pipeline trained elsewhere may interleave them, and scikit-learn refuses
    columns in another order than at fit time.
    """
    numeric_columns = {name: np.fromiter((row.get(name, np.nan) for row in numeric), dtype=np.float64,
                                         count=len(numeric)) for name in contract.numeric}
    return frame_of(contract, numeric_columns, string_columns(categorical, contract.categorical), estimator)


def frame_of(contract: FeatureContract, numeric: dict[str, np.ndarray], categorical: dict[str, Sequence[str]],
             estimator: Any = None) -> pd.DataFrame:
    """:func:`to_frame` from columns already built (one array or list per contract feature)."""
    columns: dict[str, Any] = {name: numeric[name] for name in contract.numeric}
    for name in contract.categorical:
        columns[name] = np.array(categorical[name], dtype=object)
    fitted_order = getattr(estimator, "feature_names_in_", None)
    if fitted_order is not None and set(fitted_order) == set(columns):
        columns = {name: columns[name] for name in fitted_order}
    return pd.DataFrame(columns)


def string_columns(rows: Sequence[dict[str, str]], names: Sequence[str]) -> dict[str, list[str]]:
    """Per name, the rows' values as a list, "" where a row has none."""
    if not names:
        return {}
    try:
        if len(names) == 1:
            return {names[0]: list(map(itemgetter(names[0]), rows))}
        return dict(zip(names, map(list, zip(*map(itemgetter(*names), rows))))) if rows else {n: [] for n in names}
    except KeyError:  # some rows lack a feature: the empty string, as a missing category
        return {name: [row.get(name, "") for row in rows] for name in names}


def positive_scores(estimator: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(probability per class, n x k) and the class labels as strings."""
    probabilities = estimator.predict_proba(frame)
    classes = np.array([str(c) for c in estimator.classes_], dtype=object)
    return probabilities, classes


def monitored_score(probabilities: np.ndarray) -> np.ndarray:
    """The one number per prediction that the score PSI watches, for a classifier.

    Two classes: the probability of the positive (last) class, as always.
    More classes: the probability of the predicted class (the largest one), the
    model's confidence; it shifts when inputs move to where the model is unsure,
    whichever class it picks, and stays in [0, 1] like the binary score.
    """
    if probabilities.shape[1] <= 2:
        return probabilities[:, -1]
    return probabilities.max(axis=1)


def predicted_values(estimator: Any, frame: pd.DataFrame) -> np.ndarray:
    """A regressor's predictions as float64 (one per row); ``frame`` may be the final estimator's matrix."""
    return np.asarray(estimator.predict(frame), dtype=np.float64).reshape(len(frame))


def value_label(value: float) -> str:
    """A numeric value as the string stored in ``label`` / ``predicted_label`` (round-trips exactly)."""
    return repr(float(value))
