"""The input of a model's final estimator, computed with numpy from feature columns.

driftline's own pipelines (:func:`driftline.models.build_pipeline`) are a ColumnTransformer
(impute and scale numeric features, one-hot categorical ones) before an estimator. Through
scikit-learn, scoring a batch costs a DataFrame, column selection by name, validation and a
joblib dispatch per transformer: about 9 ms per call whatever the batch size, which is most
of a small batch's cost. :class:`ColumnarInput` reads the fitted statistics once and applies
the same arithmetic, in the same order, to numpy columns, then hands the matrix to the final
estimator: the scores are bit-for-bit those of ``pipeline.predict_proba(frame)``.

Only shapes whose result it reproduces exactly are taken (:meth:`ColumnarInput.of` returns
None for anything else, and the caller goes through scikit-learn as before): numeric blocks of
``SimpleImputer`` and/or ``StandardScaler`` without indicators, one-hot blocks that ignore
unknown categories without dropping or grouping any, a dense output, and no passthrough.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from driftline.contract import FeatureContract


@dataclass(frozen=True)
class NumericBlock:
    """Columns imputed by ``fill`` (NaN -> the fitted statistic) then scaled by ``(x - mean) / scale``."""

    columns: tuple[str, ...]
    fill: np.ndarray | None
    mean: np.ndarray | None
    scale: np.ndarray | None

    def transform(self, numeric: dict[str, np.ndarray], n: int) -> np.ndarray:
        out = np.empty((n, len(self.columns)), dtype=np.float64)
        for j, name in enumerate(self.columns):
            out[:, j] = numeric[name]
        if self.fill is not None:  # as SimpleImputer: each missing cell gets its column's statistic
            missing = np.isnan(out)
            if missing.any():
                out[missing] = np.broadcast_to(self.fill, out.shape)[missing]
        if self.mean is not None:  # as StandardScaler.transform: subtract, then divide, in place
            out -= self.mean
        if self.scale is not None:
            out /= self.scale
        return out


@dataclass(frozen=True)
class OneHotBlock:
    """One 0/1 column per fitted category of each feature; an unknown category is all zeros."""

    columns: tuple[str, ...]
    index: tuple[dict[str, int], ...]  # per feature: category -> its column within the block
    width: int

    def transform(self, categorical: dict[str, Sequence[str]], n: int) -> np.ndarray | None:
        out = np.zeros((n, self.width), dtype=np.float64)
        rows = np.arange(n)
        for name, index in zip(self.columns, self.index):
            values = categorical[name]
            if not set(map(type, values)) <= {str}:
                return None  # not strings (a hand-made record): scikit-learn decides what that means
            codes = np.fromiter(map(index.get, values, [-1] * n), dtype=np.int64, count=n)
            known = codes >= 0
            out[rows[known], codes[known]] = 1.0
        return out


class ColumnarInput:
    """The final estimator of a fitted pipeline, and its input built from feature columns.

    Parameters
    ----------
    blocks
        The ColumnTransformer's transformers in its output order.
    final
        The pipeline's last step, scored on :meth:`transform`'s matrix.
    """

    def __init__(self, blocks: list[NumericBlock | OneHotBlock], final: Any):
        self.blocks = blocks
        self.final = final

    @classmethod
    def of(cls, estimator: Any, contract: FeatureContract) -> ColumnarInput | None:
        """The columnar input of ``estimator`` (cached per estimator), or None when it is not a
        pipeline this module reproduces exactly."""
        try:
            return _CACHE[estimator]
        except KeyError:
            pass
        except TypeError:  # not weak-referenceable: not a scikit-learn pipeline
            return None
        try:
            compiled = _compile(estimator, contract)
        except Exception:  # noqa: BLE001 - an unexpected estimator shape: scikit-learn's own path
            compiled = None
        _CACHE[estimator] = compiled
        return compiled

    def transform(self, numeric: dict[str, np.ndarray], categorical: dict[str, Sequence[str]], n: int
                  ) -> np.ndarray | None:
        """The final estimator's input for ``n`` rows (None: values it does not handle, use the pipeline)."""
        parts = []
        for block in self.blocks:
            part = block.transform(numeric, n) if isinstance(block, NumericBlock) else block.transform(categorical, n)
            if part is None:
                return None
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        return np.hstack(parts) if parts else np.empty((n, 0))


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compile(estimator: Any, contract: FeatureContract) -> ColumnarInput | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if type(estimator) is not Pipeline or len(estimator.steps) != 2:
        return None
    columns, final = estimator.steps[0][1], estimator.steps[1][1]
    if type(columns) is not ColumnTransformer or not hasattr(columns, "transformers_"):
        return None
    if getattr(columns, "sparse_output_", True) or _pandas_output(columns) or _pandas_output(estimator):
        return None
    names_in = getattr(columns, "feature_names_in_", None)
    if names_in is None or set(names_in) != set(contract.numeric) | set(contract.categorical):
        return None  # scikit-learn checks the names itself (and may refuse): let it
    blocks: list[NumericBlock | OneHotBlock] = []
    for _name, transformer, selected in columns.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue  # scikit-learn leaves it out of the output (a remainder may name columns by index)
        if isinstance(selected, str) or not all(isinstance(c, str) for c in selected):
            return None
        if len(selected) == 0:
            continue  # an empty selection adds no column either
        steps = transformer.steps if type(transformer) is Pipeline else [(None, transformer)]
        kinds = [type(step) for _, step in steps]
        if kinds and all(k in (SimpleImputer, StandardScaler) for k in kinds):
            block = _numeric_block(tuple(selected), [step for _, step in steps], contract)
        elif kinds == [OneHotEncoder]:
            block = _one_hot_block(tuple(selected), steps[0][1], contract)
        else:
            return None
        if block is None:
            return None
        blocks.append(block)
    if not hasattr(final, "predict_proba" if contract.task != "regression" else "predict"):
        return None
    return ColumnarInput(blocks, final)


def _pandas_output(estimator: Any) -> bool:
    return getattr(estimator, "_sklearn_output_config", {}).get("transform", "default") != "default"


def _numeric_block(selected: tuple[str, ...], steps: list[Any], contract: FeatureContract) -> NumericBlock | None:
    from sklearn.impute import SimpleImputer

    if not set(selected) <= set(contract.numeric):
        return None
    fill = mean = scale = None
    seen_scaler = False
    for step in steps:
        if isinstance(step, SimpleImputer):
            if seen_scaler or fill is not None or step.add_indicator:
                return None
            missing = step.missing_values
            if not (isinstance(missing, float) and np.isnan(missing)):
                return None
            statistics = np.asarray(step.statistics_, dtype=np.float64)
            if statistics.shape != (len(selected),) or np.isnan(statistics).any():
                return None  # an all-missing training column is dropped (or kept) by rules of its own
            fill = statistics
        else:
            if seen_scaler:
                return None
            seen_scaler = True
            if getattr(step, "n_features_in_", len(selected)) != len(selected):
                return None
            mean = None if not step.with_mean else np.asarray(step.mean_, dtype=np.float64)
            scale = None if not step.with_std else np.asarray(step.scale_, dtype=np.float64)
    return NumericBlock(selected, fill, mean, scale)


def _one_hot_block(selected: tuple[str, ...], encoder: Any, contract: FeatureContract) -> OneHotBlock | None:
    if not set(selected) <= set(contract.categorical):
        return None
    if encoder.handle_unknown != "ignore" or encoder.drop_idx_ is not None or encoder._infrequent_enabled:
        return None
    if np.dtype(encoder.dtype) != np.float64 or len(encoder.categories_) != len(selected):
        return None
    index, offset = [], 0
    for categories in encoder.categories_:
        if not all(isinstance(c, str) for c in categories):
            return None
        index.append({c: offset + i for i, c in enumerate(categories)})
        offset += len(categories)
    return OneHotBlock(selected, tuple(index), offset)


def numeric_matrix(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> np.ndarray:
    """``rows`` (dicts) as an ``n x len(names)`` float64 matrix; NaN where a row has no such key
    (or None), one pass in C when every row has every name."""
    n, k = len(rows), len(names)
    if k == 0:
        return np.empty((n, 0), dtype=np.float64)
    try:
        if k == 1:
            return np.array(list(map(itemgetter(names[0]), rows)), dtype=np.float64).reshape(n, 1)
        return np.array(list(map(itemgetter(*names), rows)), dtype=np.float64).reshape(n, k)
    except KeyError:  # optional features absent from some rows: missing values
        out = np.empty((n, k), dtype=np.float64)
        nan = float("nan")
        for j, name in enumerate(names):
            out[:, j] = np.array([row.get(name, nan) for row in rows], dtype=np.float64)
        return out
