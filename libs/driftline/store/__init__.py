"""The store: ClickHouse through clickhouse-connect, and nothing else.

``chdb://PATH`` opens the ClickHouse engine in-process (embedded mode);
``http(s)://…`` reaches a ClickHouse server or ``driftline store serve``.
An http(s) DSN without a user is sent with the endpoint's credentials file
(``driftline.store.credentials``); a user in the DSN wins.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect

from driftline.store.column_batch import ColumnBatch
from driftline.store.credentials import credentials_for_dsn
from driftline.store.ddl import MIGRATIONS

__all__ = ["ColumnBatch", "Store"]


class Store:
    """Insert batches and run queries on ClickHouse.

    Parameters
    ----------
    dsn
        A clickhouse-connect DSN: ``chdb:///abs/path`` or ``http://host:8123``
        (``http://user:password@host:8123`` for a server with its own users).
    credentials_file
        The ``driftline store serve`` credentials to send when an http(s)
        ``dsn`` names no user; default ``DRIFTLINE_STORE_CREDENTIALS_FILE``
        or ``DRIFTLINE_HOME/store-credentials.json``.
    """

    def __init__(self, dsn: str, credentials_file: Path | None = None):
        self.dsn = dsn
        credentials = credentials_for_dsn(dsn, credentials_file)
        login = {} if credentials is None else {"username": credentials.user, "password": credentials.password}
        self._client = clickhouse_connect.get_client(dsn=dsn, **login)
        # chDB runs in our process and a clickhouse-connect client is not thread-safe:
        # services that share a store in embedded mode take turns.
        self._lock = threading.Lock()
        self._types: dict[tuple[str, tuple[str, ...]], list[Any]] = {}  # (table, columns) -> column types

    def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded; return the versions applied now."""
        with self._lock:
            self._client.command(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
                "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
            )
            done = {row[0] for row in self._client.query("SELECT version FROM schema_migrations").result_rows}
            applied = []
            self._types.clear()  # a migration may change a table's columns
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    self._client.command(statement)
                self._client.insert("schema_migrations", [(version, name)], column_names=["version", "name"])
                applied.append(version)
            return applied

    def insert(self, table: str, rows: Sequence[dict[str, Any]] | ColumnBatch) -> None:
        """Insert rows in one batch: dicts with the same keys, or a :class:`ColumnBatch`."""
        if not rows:
            return
        if isinstance(rows, ColumnBatch):
            columns, data = list(rows.columns), list(rows.columns.values())
        else:
            columns = list(rows[0])
            data = [[row[c] for row in rows] for c in columns]
        with self._lock:
            types = self._column_types(table, columns)
            try:
                self._client.insert(table, data, column_names=columns, column_types=types, column_oriented=True)
            except Exception:
                self._types.pop((table, tuple(columns)), None)  # the table may have changed: ask again next time
                raise

    def _column_types(self, table: str, columns: list[str]) -> list[Any]:
        """The columns' ClickHouse types, asked once per table and column list (clickhouse-connect
        would otherwise send a ``DESCRIBE TABLE`` before every insert: a round trip each)."""
        key = (table, tuple(columns))
        types = self._types.get(key)
        if types is None:
            types = self._types[key] = list(self._client.create_insert_context(table, columns).column_types)
        return types

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Column names and rows."""
        with self._lock:
            result = self._client.query(sql, parameters=parameters)
        return list(result.column_names), result.result_rows

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.query(sql, parameters)[1][0][0]

    def command(self, sql: str) -> None:
        with self._lock:
            self._client.command(sql)

    def close(self) -> None:
        with self._lock:
            self._client.close()
