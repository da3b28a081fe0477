"""Table files a user brings: CSV, Parquet or JSON lines, read into a DataFrame with a fingerprint.

``driftline model register`` trains and profiles from such a file and records
where the data came from (:class:`TableSource`) in the version's lineage.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}
"""File name endings and the format read for each (``.json`` must hold one JSON object per line)."""

ACCEPTED = "CSV (.csv), Parquet (.parquet, .pq) or JSON lines (.jsonl, .ndjson, .json: one object per line)"


class UnreadableTable(ValueError):
    """A file that is missing, of an unknown format, or does not parse as the format its name says."""


@dataclass(frozen=True)
class TableSource:
    """Where a table came from: recorded in a model version's lineage."""

    file: str
    format: str
    sha256: str
    rows: int
    columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def table_format(path: Path) -> str:
    """The format of ``path`` by its ending; :class:`UnreadableTable` says which are accepted."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise UnreadableTable(f"{path.name}: unknown file type {path.suffix or '(no ending)'!r}; "
                              f"driftline reads {ACCEPTED}") from None


def read_table(path: str | Path) -> tuple[pd.DataFrame, TableSource]:
    """Read a CSV, Parquet or JSON-lines file and describe it.

    Raises
    ------
    UnreadableTable
        The file is missing, has an unknown ending, does not parse, or has no rows.
    """
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise UnreadableTable(f"{path}: no such file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True)
    except Exception as exc:  # pandas and pyarrow raise many types; the user needs the file and the format
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableTable(f"{path.name}: cannot read it as {kind} ({first}); driftline reads {ACCEPTED}") from exc
    if frame.empty:
        raise UnreadableTable(f"{path.name}: no rows")
    frame.columns = [str(c) for c in frame.columns]
    source = TableSource(path.name, kind, file_sha256(path), len(frame), tuple(frame.columns))
    return frame, source


def require_columns(frame: pd.DataFrame, columns: list[str], file: str, what: str) -> None:
    """Raise ValueError naming the columns ``file`` has when any of ``columns`` is missing."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{file} has no {what} column {', '.join(map(repr, missing))}; "
                         f"its columns are: {', '.join(frame.columns)}")
