"""A model's feature contract: which features it reads and what it predicts.

Ingest validates events against it, the predictor vectorizes with it, the
drift-detector profiles exactly these features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FeatureContract:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    classes: tuple[str, ...] = ("0", "1")
    task: str = "classification"
    optional: tuple[str, ...] = field(default=(), metadata={"doc": "Features that may be absent (missing values)."})

    def __post_init__(self) -> None:
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"features both numeric and categorical: {sorted(overlap)}")

    @property
    def required(self) -> set[str]:
        return (set(self.numeric) | set(self.categorical)) - set(self.optional)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureContract:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def problems(self, numeric: dict[str, Any], categorical: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, message) for every way the features break the contract; empty if none."""
        found = []
        for name in sorted(self.required - set(numeric) - set(categorical)):
            where = "numeric_features" if name in self.numeric else "categorical_features"
            found.append((f"{where}.{name}", "required feature is missing"))
        for name in sorted(set(numeric) - set(self.numeric)):
            hint = " (it is categorical)" if name in self.categorical else ""
            found.append((f"numeric_features.{name}", f"not a numeric feature of this model{hint}"))
        for name in sorted(set(categorical) - set(self.categorical)):
            hint = " (it is numeric)" if name in self.numeric else ""
            found.append((f"categorical_features.{name}", f"not a categorical feature of this model{hint}"))
        return found
