"""A new model version from a user's table or from a pipeline trained elsewhere, ready to register.

The reference profile (features and score) always comes from rows the model
did not train on: a held-out part of the training table, or a separate
reference table (less any of its rows that are also training rows). Drift is
then measured against what the model does on unseen data, not against data it
has memorised. The metrics are measured on the same rows. For a pipeline
trained elsewhere driftline cannot know its training rows; the lineage says so.
The lineage records how the profile was made: ``profile_rows`` and
``profile_from``.

Nothing here writes: :class:`PreparedVersion` holds everything a registry
needs (``driftline model register`` does the writing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.model_selection import train_test_split

from driftline.contract import FeatureContract
from driftline.contract_inference import ContractInference
from driftline.datasets import TableSource, require_columns
from driftline.drift.profile import ReferenceProfile
from driftline.models import build_pipeline
from driftline.training import classification_metrics, data_sha256, prediction_score

EXTERNAL_RECIPE = {"refit": "clone"}
"""The recipe of a pipeline trained elsewhere: the retrainer refits a clone of the champion's own pipeline."""


@dataclass(frozen=True)
class PreparedVersion:
    """Everything a registry records for a new version, and the fitted estimator."""

    estimator: Any
    contract: FeatureContract
    recipe: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    profile: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was decided, for the user to read


def score(estimator: Any, contract: FeatureContract, frame: pd.DataFrame) -> np.ndarray:
    """What the predictor publishes as the score and the drift detector profiles: the prediction (regression),
    the positive class's probability (two classes) or the predicted class's probability (more)."""
    return prediction_score(estimator, contract, frame)


def _row_keys(features: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """One hash per row of features and label, to find the same row in two tables."""
    keyed = features.reset_index(drop=True).assign(__label__=pd.Series(labels).astype(str).to_numpy())
    return pd.util.hash_pandas_object(keyed, index=False).to_numpy()


def _not_training_rows(inference: ContractInference, reference: pd.DataFrame, training: pd.DataFrame,
                       notes: list[str], file: str) -> tuple[pd.DataFrame, int]:
    """``reference`` without the rows (features and label) that are also in ``training``, and how many went."""
    seen = set(_row_keys(inference.features(training), inference.labels(training)).tolist())
    shared = np.fromiter((k in seen for k in _row_keys(inference.features(reference), inference.labels(reference))),
                         dtype=bool, count=len(reference))
    if shared.all():
        raise ValueError(f"every row of {file} is also a training row, so it cannot show what the model does on "
                         f"data it did not train on; give rows kept out of training, or leave out --reference "
                         f"(a holdout of the training table is profiled then)")
    if shared.any():
        notes.append(f"{file}: {int(shared.sum())} rows that are also training rows left out of the profile "
                     f"and the metrics")
    return reference[~shared], int(shared.sum())


def profile_of(estimator: Any, inference: ContractInference, frame: pd.DataFrame) -> dict[str, Any]:
    """Bins and proportions of every feature and of the score on ``frame`` (rows the model did not train on)."""
    contract = inference.contract_
    features = inference.features(frame)
    names = getattr(estimator, "feature_names_in_", None)
    scored = features if names is None else features[[str(n) for n in names]]  # scikit-learn checks the order
    return ReferenceProfile.fit(
        numeric={n: features[n].to_numpy(dtype=float) for n in contract.numeric},
        categorical=inference.categories_with_missing(frame),
        score=score(estimator, contract, scored),
    ).to_dict()


def metrics_of(estimator: Any, contract: FeatureContract, features: pd.DataFrame, labels: np.ndarray) -> dict[str, Any]:
    if contract.task == "regression":
        predicted = np.asarray(estimator.predict(features), dtype=float)
        return {"mae": float(mean_absolute_error(labels, predicted)),
                "rmse": float(np.sqrt(mean_squared_error(labels, predicted))), "rows": int(len(labels))}
    return classification_metrics(estimator, features, labels)


def holdout_split(frame: pd.DataFrame, labels: np.ndarray, fraction: float, seed: int,
                  stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (train, holdout); stratified by class when every class has two rows or more."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout must be between 0 and 1 (exclusive), not {fraction}")
    positions = np.arange(len(frame))
    _, counts = np.unique(labels, return_counts=True) if stratify else (None, None)
    by_class = labels if stratify and counts.min() >= 2 else None
    try:
        train, held = train_test_split(positions, test_size=fraction, random_state=seed, stratify=by_class)
    except ValueError as exc:  # e.g. too few rows for the fraction
        raise ValueError(f"cannot hold out {fraction:.0%} of {len(frame)} rows: {exc}") from exc
    return np.sort(train), np.sort(held)


def _labelled(inference: ContractInference, frame: pd.DataFrame, notes: list[str], file: str) -> pd.DataFrame:
    keep = inference.has_label(frame)
    if not keep.all():
        notes.append(f"{file}: {int((~keep).sum())} rows without a {inference.target!r} value left out")
    return frame[keep]


def from_table(
    frame: pd.DataFrame,
    source: TableSource,
    inference: ContractInference,
    recipe: dict[str, Any],
    *,
    reference: tuple[pd.DataFrame, TableSource] | None = None,
    holdout_fraction: float = 0.25,
    seed: int = 0,
) -> PreparedVersion:
    """Train ``recipe`` on ``frame``; profile and measure on a holdout of it, or on ``reference``.

    Raises ValueError with a message for the user when a column is missing, a value
    has the wrong type, or the target has fewer than two classes.
    """
    require_columns(frame, [inference.target], source.file, "target")
    notes: list[str] = []
    frame = _labelled(inference, frame, notes, source.file)
    inference.fit(frame)
    contract = inference.contract_
    labels = inference.labels(frame)
    if reference is None:
        train_at, held_at = holdout_split(frame, labels, holdout_fraction, seed, contract.task == "classification")
        train_frame, held_frame = frame.iloc[train_at], frame.iloc[held_at]
        held_from = {"held_out_of": source.file, "fraction": holdout_fraction, "seed": seed, "in_sample": False}
    else:
        held_frame, ref_source = reference
        require_columns(held_frame, list(contract.numeric + contract.categorical) + [inference.target],
                        ref_source.file, "feature or target")
        held_frame = _labelled(inference, held_frame, notes, ref_source.file)
        train_frame = frame
        held_frame, shared = _not_training_rows(inference, held_frame, train_frame, notes, ref_source.file)
        held_from = {"reference": ref_source.to_dict(), "training_rows_left_out": shared, "in_sample": False}
    train_features, train_labels = inference.features(train_frame), inference.labels(train_frame)
    estimator = build_pipeline(recipe, contract).fit(train_features, train_labels)
    held_features, held_labels = inference.features(held_frame), inference.labels(held_frame)

    metrics = metrics_of(estimator, contract, held_features, held_labels)
    metrics["evaluated_on"] = "holdout" if reference is None else "reference"
    lineage = {
        "origin": "trained by driftline model register",
        "data": source.to_dict(),
        "target": inference.target,
        "not_features": dict(inference.not_features_),
        "train_rows": len(train_frame),
        "train_data_sha256": data_sha256(train_features, train_labels),
        "profile_rows": len(held_frame),
        "profile_from": held_from,
    }
    profile = profile_of(estimator, inference, held_frame)
    return PreparedVersion(estimator, contract, dict(recipe), dict(recipe.get("params", {})), metrics, lineage,
                           profile, notes)


def from_artifact(
    estimator: Any,
    artifact_file: str,
    artifact_sha256: str,
    inference: ContractInference,
    reference: tuple[pd.DataFrame, TableSource] | None,
) -> PreparedVersion:
    """A pipeline trained elsewhere: its contract checked against its ``feature_names_in_``.

    With ``reference``, the contract's types come from that table and it gives the
    profile (and, when it has ``inference.target``, the metrics). Without it, every
    feature is numeric unless ``inference.categorical`` says otherwise, and there is
    no profile: such a version is not monitored.
    """
    notes: list[str] = []
    names = getattr(estimator, "feature_names_in_", None)
    names = None if names is None else [str(n) for n in names]
    classes = getattr(estimator, "classes_", None)
    task = inference.task
    if task == "classification" and classes is None:
        raise ValueError(f"{artifact_file}: the pipeline has no classes_; is it a fitted classifier? "
                         "(for a regressor, say --task regression)")
    class_names = None if classes is None or task == "regression" else [_class_name(c) for c in classes]

    if reference is None:
        if names is None:
            raise ValueError(f"{artifact_file}: the pipeline has no feature_names_in_ (fit it on a pandas DataFrame), "
                             "and without --reference driftline cannot tell which features it reads")
        unknown = [c for c in inference.categorical if c not in names]
        if unknown:
            raise ValueError(f"--categorical names {', '.join(map(repr, unknown))}, which the pipeline does not read; "
                             f"it reads: {', '.join(names)}")
        categorical = tuple(c for c in names if c in set(inference.categorical))
        contract = FeatureContract(numeric=tuple(c for c in names if c not in set(categorical)),
                                   categorical=categorical, classes=tuple(class_names or ()), task=task)
        inference.contract_ = contract
        metrics, profile, profile_rows, held_from = {}, {}, 0, None
        notes.append("no --reference: no reference profile, so this version's drift cannot be monitored")
    else:
        frame, ref_source = reference
        has_target = inference.target is not None
        if has_target:
            require_columns(frame, [inference.target], ref_source.file, "target")
            frame = _labelled(inference, frame, notes, ref_source.file)
        inference.fit(frame, classes=class_names)
        contract = inference.contract_
        if names is not None:
            _check_feature_names(names, contract, ref_source.file, artifact_file)
            # The pipeline's own column order, so a ColumnTransformer by position still lines up.
            order = {n: i for i, n in enumerate(names)}
            contract = FeatureContract(
                numeric=tuple(sorted(contract.numeric, key=order.get)),
                categorical=tuple(sorted(contract.categorical, key=order.get)),
                classes=contract.classes, task=contract.task, optional=contract.optional)
            inference.contract_ = contract
        features = inference.features(frame)
        if names is not None:
            features = features[names]
        try:
            profile = profile_of(estimator, inference, frame)
            metrics = metrics_of(estimator, contract, features, inference.labels(frame)) if has_target else {}
        except Exception as exc:  # the user's pipeline, the user's data: say where it broke
            raise ValueError(f"{artifact_file} cannot score {ref_source.file}: {type(exc).__name__}: {exc}") from exc
        if metrics:
            metrics["evaluated_on"] = "reference"
        # Trained elsewhere: whether these rows were among its training rows is the user's to know.
        profile_rows, held_from = len(frame), {"reference": ref_source.to_dict(), "in_sample": "unknown",
                                               "note": "pipeline trained outside driftline: give reference rows "
                                                       "it did not train on"}
    lineage = {
        "origin": "external artifact: trained outside driftline",
        "artifact": {"file": artifact_file, "sha256": artifact_sha256, "type": _type_name(estimator)},
        "target": inference.target,
        "not_features": dict(inference.not_features_),
        "profile_rows": profile_rows,
        "profile_from": held_from,
    }
    return PreparedVersion(estimator, contract, dict(EXTERNAL_RECIPE), {}, metrics, lineage, profile, notes)


def _check_feature_names(names: list[str], contract: FeatureContract, file: str, artifact_file: str) -> None:
    features = set(contract.numeric) | set(contract.categorical)
    missing = [n for n in names if n not in features]
    extra = sorted(features - set(names))
    problems = []
    if missing:
        problems.append(f"{file} lacks the columns the pipeline reads: {', '.join(missing)}")
    if extra:
        problems.append(f"{file} has columns the pipeline does not read: {', '.join(extra)} "
                        f"(name them with --ignore, --id or --time)")
    if problems:
        raise ValueError(f"{artifact_file} does not match the reference data: " + "; ".join(problems)
                         + f". The pipeline reads: {', '.join(names)}")


def _class_name(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _type_name(estimator: Any) -> str:
    kind = type(estimator)
    return f"{kind.__module__}.{kind.__qualname__}"

