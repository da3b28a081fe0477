"""Read a CSV, JSON-lines or Parquet file row by row, as dicts, with how far through the file we are.

CSV cells stay strings (an empty cell is a missing value, for the caller to drop);
JSON lines keep their JSON types; Parquet gives Python values. A line that cannot
be read (not JSON, a CSV row with more or fewer cells than the header) is a
:class:`BadRow` with its line number, never an exception that stops the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


class RowFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, no header)."""


@dataclass(frozen=True)
class Row:
    """A row of the file: its values by column, and where it starts (1-based line; Parquet: row number)."""

    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    """A line that could not be read as a row, and why."""

    line: int
    reason: str


class RowFile:
    """A data file to read row by row.

    Parameters
    ----------
    path
        The file.
    file_format
        ``csv``, ``tsv``, ``jsonl`` or ``parquet``; None: from the extension.
    """

    def __init__(self, path: Path | str, file_format: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise RowFileError(f"no such file: {self.path}")
        self.format = file_format or FORMATS.get(self.path.suffix.lower())
        if self.format not in set(FORMATS.values()):
            raise RowFileError(f"cannot tell the format of {self.path.name}: name it .csv, .tsv, .jsonl or .parquet, "
                               "or pass --format")
        self.size = os.path.getsize(self.path)
        self.done = 0  # bytes (CSV, JSON lines) or rows (Parquet) read so far, of ``total``
        self.total = self.size if self.format != "parquet" else self._parquet_rows()
        self.columns: list[str] = []  # the header (CSV, Parquet) or the first row's keys (JSON lines)

    def rows(self) -> Iterator[Row | BadRow]:
        """Every row from the start (each call reads the file again)."""
        self.done = 0
        if self.format == "parquet":
            yield from self._parquet()
        elif self.format == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._csv("\t" if self.format == "tsv" else ",")

    def _lines(self) -> Iterator[str]:
        """Decoded lines, counting the bytes read (a text file cannot ``tell`` while iterated)."""
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        with open(self.path, "rb") as handle:
            for raw in handle:
                self.done += len(raw)
                yield decoder.decode(raw)

    def _csv(self, delimiter: str) -> Iterator[Row | BadRow]:
        reader = csv.reader(self._lines(), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise RowFileError(f"{self.path.name} is empty: a CSV file needs a header line") from None
        if len(set(header)) != len(header) or any(not h.strip() for h in header):
            raise RowFileError(f"{self.path.name}: the header has empty or repeated column names: {header}")
        self.columns = header
        line = reader.line_num + 1
        for cells in reader:
            if cells and len(cells) != len(header):
                yield BadRow(line, f"{len(cells)} cells where the header has {len(header)}")
            elif cells:
                yield Row(line, dict(zip(header, cells)))
            line = reader.line_num + 1

    def _jsonl(self) -> Iterator[Row | BadRow]:
        for line, text in enumerate(self._lines(), start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield BadRow(line, f"not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield BadRow(line, f"a JSON {type(value).__name__}, not an object")
                continue
            if not self.columns:
                self.columns = list(value)
            yield Row(line, value)

    def _parquet_file(self):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RowFileError("reading Parquet needs pyarrow: pip install pyarrow") from None
        return pq.ParquetFile(self.path)

    def _parquet_rows(self) -> int:
        return self._parquet_file().metadata.num_rows

    def _parquet(self) -> Iterator[Row | BadRow]:
        parquet = self._parquet_file()
        self.columns = list(parquet.schema_arrow.names)
        for batch in parquet.iter_batches(batch_size=10_000):
            for values in batch.to_pylist():
                self.done += 1
                yield Row(self.done, values)
