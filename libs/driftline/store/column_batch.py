"""Rows of one table held as one list per column: what a service builds for a batch and
what :meth:`driftline.store.Store.insert` sends in one column-oriented insert."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ColumnBatch:
    """Rows of one table, one list per column (all of the same length).

    Building a batch column by column spares a dict per row, and clickhouse-connect
    inserts column-oriented data without transposing it. Times may be Python int epoch
    ms for ``DateTime64(3)`` columns, but one kind per column: never datetimes and ints
    mixed in one column of one batch.

    Parameters
    ----------
    columns
        Column name -> values; every list as long as the others.
    """

    __slots__ = ("columns",)

    def __init__(self, columns: Mapping[str, Sequence[Any]]):
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: { {c: len(v) for c, v in columns.items()} }")
        self.columns: dict[str, list[Any]] = {name: list(values) for name, values in columns.items()}

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> ColumnBatch:
        """The same rows, column-wise (the first row's keys name the columns)."""
        names = list(rows[0]) if rows else []
        return cls({name: [row[name] for row in rows] for name in names})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row (for tests and for readers that want rows)."""
        names = list(self.columns)
        return [dict(zip(names, values)) for values in zip(*self.columns.values())]

    def extend(self, other: ColumnBatch) -> None:
        """Append ``other``'s rows; it must have the same columns (in any order)."""
        if not self.columns:
            self.columns = {name: list(values) for name, values in other.columns.items()}
            return
        if set(other.columns) != set(self.columns):
            raise ValueError(f"cannot append rows with columns {sorted(other.columns)} "
                             f"to a batch with columns {sorted(self.columns)}")
        for name, values in self.columns.items():
            values.extend(other.columns[name])

    def copy(self) -> ColumnBatch:
        return ColumnBatch(self.columns)
