"""Infer a model's feature contract from a table: which columns are numeric, categorical or not features.

:class:`ContractInference` follows scikit-learn's shape: ``fit`` learns the
contract from a training table, then ``features`` and ``labels`` turn any
table with the same columns into the model's input and its target, the way
the predictor will see live events (numbers as floats, categories as strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from driftline.contract import FeatureContract

ID_COLUMNS = ("event_id", "id")
"""Column names taken as the event id when ``id_column`` is not given (never features)."""

TIME_COLUMNS = ("event_time", "timestamp")
"""Column names taken as the event time when ``time_column`` is not given (never features)."""

TASKS = ("classification", "regression")


@dataclass
class ContractInference:
    """Decide each column's role and learn a :class:`FeatureContract` from a table.

    Parameters
    ----------
    target
        The column to predict; never a feature.
    numeric, categorical
        Columns forced to that type (others: numbers are numeric, anything else categorical).
    ignore
        Columns that are not features.
    id_column, time_column
        The event id and event time columns, not features; by default the first of
        :data:`ID_COLUMNS` / :data:`TIME_COLUMNS` present. Date-time columns are never features.
    task
        ``classification`` (classes are the target's values) or ``regression``.

    Attributes
    ----------
    contract_ : FeatureContract
        Set by :meth:`fit`.
    not_features_ : dict[str, str]
        Column -> why it is not a feature (target, id, time, ignored, date-time).
    """

    target: str | None
    numeric: Sequence[str] = ()
    categorical: Sequence[str] = ()
    ignore: Sequence[str] = ()
    id_column: str | None = None
    time_column: str | None = None
    task: str = "classification"
    contract_: FeatureContract | None = field(default=None, init=False)
    not_features_: dict[str, str] = field(default_factory=dict, init=False)

    def fit(self, frame: pd.DataFrame, classes: Sequence[str] | None = None) -> ContractInference:
        """Learn the contract from ``frame``; ``classes`` default to the target's distinct values."""
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        columns = list(frame.columns)
        named = {"--numeric": self.numeric, "--categorical": self.categorical, "--ignore": self.ignore,
                 "--id": [self.id_column] if self.id_column else [],
                 "--time": [self.time_column] if self.time_column else []}
        for option, names in named.items():
            unknown = [n for n in names if n not in columns]
            if unknown:
                raise ValueError(f"{option} names {', '.join(map(repr, unknown))}, which the data does not have; "
                                 f"its columns are: {', '.join(columns)}")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns both --numeric and --categorical: {', '.join(sorted(both))}")

        roles: dict[str, str] = {}
        if self.target is not None:
            roles[self.target] = "target"
        id_column = self.id_column or next((c for c in ID_COLUMNS if c in columns), None)
        time_column = self.time_column or next((c for c in TIME_COLUMNS if c in columns), None)
        for name, role in ((id_column, "id"), (time_column, "time")):
            if name is not None:
                roles.setdefault(name, role)
        for name in self.ignore:
            roles.setdefault(name, "ignored")
        forced = set(self.numeric) | set(self.categorical)
        for name in columns:
            if name not in roles and name not in forced and pd.api.types.is_datetime64_any_dtype(frame[name]):
                roles[name] = "date-time"
        self.not_features_ = roles

        numeric, categorical = [], []
        for name in columns:
            if name in roles:
                continue
            if name in self.categorical:
                categorical.append(name)
            elif name in self.numeric or _is_number(frame[name]):
                numeric.append(name)
            else:
                categorical.append(name)
        if not numeric and not categorical:
            raise ValueError(f"no feature columns left: every column is the target, id, time or ignored "
                             f"({', '.join(f'{c}: {r}' for c, r in roles.items())})")
        optional = tuple(c for c in numeric + categorical if frame[c].isna().any())
        if self.task == "regression":
            classes = ()
        elif classes is None:
            classes = tuple(sorted(set(self.labels(frame))))
            if len(classes) < 2:
                raise ValueError(f"target {self.target!r} has one value only ({', '.join(classes) or 'none'}); "
                                 f"a classifier needs at least two classes")
        self.contract_ = FeatureContract(numeric=tuple(numeric), categorical=tuple(categorical),
                                         classes=tuple(classes), task=self.task, optional=optional)
        for name in numeric:  # fail here, naming the column, rather than deep in scikit-learn
            self._numbers(frame, name)
        return self

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input: numeric columns as floats (NaN if absent), categorical ones as strings ("" if absent)."""
        contract = self._fitted()
        out = {name: self._numbers(frame, name) for name in contract.numeric}
        for name in contract.categorical:
            out[name] = _category_strings(frame[name]).fillna("").to_numpy(dtype=object)
        return pd.DataFrame(out, index=frame.index)

    def categories_with_missing(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Categorical values for profiling: strings, ``None`` where absent (the profile's missing bin)."""
        return {name: _category_strings(frame[name]).to_numpy(dtype=object) for name in self._fitted().categorical}

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The target as the predictor reports it: class names as strings, or floats for regression."""
        values = frame[self.target]
        if self.task == "regression":
            return pd.to_numeric(values, errors="raise").to_numpy(dtype=float)
        return _category_strings(values).to_numpy(dtype=object)

    def has_label(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.target].notna().to_numpy()

    def _numbers(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna()
        if bad.any():
            example = frame[name][bad].iloc[0]
            raise ValueError(f"column {name!r} is numeric but has the value {example!r} "
                             f"({int(bad.sum())} such rows); mark it --categorical or fix the data")
        return values.to_numpy(dtype=float)

    def _fitted(self) -> FeatureContract:
        if self.contract_ is None:
            raise RuntimeError("call fit first")
        return self.contract_


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _category_strings(column: pd.Series) -> pd.Series:
    """Strings as a live event would carry them: integral floats lose their ``.0`` (1.0 -> "1"); missing stays None."""
    def text(value):
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return column.astype(object).map(text)
