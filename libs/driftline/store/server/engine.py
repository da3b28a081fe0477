"""The chDB engine: the one connection for a store path, and the per-request state switched on it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.store.server.errors import ServerError, _not_implemented
from driftline.store.server.options import RequestOptions
from driftline.store.server.sessions import SessionState
from driftline.store.server.statements import DEFAULT_FORMAT, Statement

INSERT_CHUNK = 4 << 20  # bytes handed to chDB's streaming insert per call
_SET_TARGETS_READONLY = re.compile(r"\breadonly\b", re.I)


@dataclass
class Outcome:
    """A statement's result as the HTTP layer needs it."""

    body: bytes = b""
    summary: dict[str, str] = field(default_factory=dict)
    result_format: str | None = None  # set only for statements that return rows, as ClickHouse does
    timezone: str = "UTC"


def _quote_value(value: str) -> str:
    """A client's setting value as a SQL string literal (ClickHouse converts it to the setting's type)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _startup_literal(value: str) -> str:
    """A value chDB itself reported; expression defaults come back already quoted (``'auto(2)'``)."""
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value
    return _quote_value(value)


def _quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ChdbEngine:
    """The chDB connections for a store path, and the per-request state switched on them.

    The main connection runs everything the access policy allows. A second
    connection to the same store, opened with chDB's own ``readonly=1``,
    runs the reads that need no setting changed (chDB refuses any change
    there): if the policy ever let a write or a table function through in a
    read, the engine itself would still refuse it. ``readonly`` cannot be set
    per statement on the main connection: once SET, chDB does not let it be
    unset. chDB allows one statement at a time (a streaming insert blocks all
    others), so everything runs under one lock.

    Parameters
    ----------
    path
        The chDB data folder.
    readonly_reads
        Open the readonly connection (off with ``--allow-admin``, where
        temporary tables on the main connection must stay visible to reads).
    """

    def __init__(self, path: str, readonly_reads: bool = True):
        from chdb import session as chdb_session  # heavy import, deferred until a store is really opened

        self._conn = chdb_session.Session(path)
        self._lock = threading.Lock()
        self._readonly_conn: Any = None
        if readonly_reads:
            import chdb

            self._readonly_conn = chdb.connect(f"{path}?readonly=1")
        self.version, self.timezone = self._text("SELECT version(), timezone()").rstrip("\n").split("\t")
        self._startup = self._changed_settings()
        self.http_compression_default = self._text(
            "SELECT value FROM system.settings WHERE name = 'enable_http_compression'"
        ).strip() == "1"
        self.default_database = self._text("SELECT currentDatabase()").strip()
        self._database = self.default_database
        self._readonly_database = self.default_database
        self._applied: dict[str, str] = {}
        self.table_functions = frozenset(self._text("SELECT name FROM system.table_functions").split())

    def close(self) -> None:
        with self._lock:
            if self._readonly_conn is not None:
                self._readonly_conn.close()
            self._conn.close()

    @staticmethod
    def effective_settings(opts: RequestOptions, session: SessionState | None) -> dict[str, str]:
        """The settings a request runs with: its session's, overridden by its own URL parameters."""
        return {**(session.settings if session else {}), **opts.settings}

    def execute(
        self, stmt: Statement, opts: RequestOptions, session: SessionState | None, readonly: bool = False
    ) -> Outcome:
        """Run one statement with the request's (and its session's) database and settings.

        ``readonly``: the access policy found a read that changes no setting; it
        runs on the readonly connection when there is one.
        """
        settings = self.effective_settings(opts, session)
        database = opts.database or (session.database if session else None) or self.default_database
        with self._lock:
            if readonly and self._readonly_conn is not None and stmt.kind == "query" and not settings:
                outcome = self._readonly_query(stmt, opts.bind, database)
            else:
                self._switch_database(database)
                self._switch_settings(settings)
                outcome = self._dispatch(stmt, opts, session)
        outcome.timezone = settings.get("session_timezone") or self.timezone
        return outcome

    def _readonly_query(self, stmt: Statement, bind: dict[str, str], database: str) -> Outcome:
        if database != self._readonly_database:
            self._run(f"USE {_quote_ident(database)}", DEFAULT_FORMAT, conn=self._readonly_conn)
            self._readonly_database = database
        return self._query(stmt, bind, conn=self._readonly_conn)

    def _dispatch(self, stmt: Statement, opts: RequestOptions, session: SessionState | None) -> Outcome:
        if stmt.kind == "insert":
            return self._insert(stmt)
        if stmt.kind == "set":
            return self._set(stmt, session)
        if stmt.kind == "use":
            return self._use(stmt, session)
        return self._query(stmt, opts.bind)

    # -- statements

    def _query(self, stmt: Statement, bind: dict[str, str], conn: Any = None) -> Outcome:
        result = self._run(stmt.sql, stmt.fmt, bind, conn=conn)
        return Outcome(
            body=result.bytes(),
            summary=_summary(result),
            result_format=stmt.fmt if stmt.returns_rows else None,
        )

    def _insert(self, stmt: Statement) -> Outcome:
        """Feed the data to chDB's streaming insert: no temporary file, no re-parsing in Python."""
        try:
            inserter = self._conn.send_insert(stmt.sql, stmt.fmt)
        except Exception as exc:
            raise ServerError.from_engine(exc) from exc
        try:
            for piece in _pieces(stmt.data, INSERT_CHUNK):
                inserter.append(piece)
            result = inserter.finish()
        except Exception as exc:
            inserter.cancel()  # no-op once finish() ran; otherwise nothing is committed
            raise ServerError.from_engine(exc) from exc
        return Outcome(
            summary={
                "read_rows": "0",
                "read_bytes": "0",
                "written_rows": str(result.rows_written),
                "written_bytes": str(result.bytes_written),
                "elapsed_ns": str(int(result.elapsed * 1e9)),
            }
        )

    def _set(self, stmt: Statement, session: SessionState | None) -> Outcome:
        """Run SET from the startup state, read back what it changed, keep that for the session.

        Without a session ClickHouse forgets a SET after the request; so does
        this endpoint. ``readonly`` is refused: once set, chDB cannot unset it.
        """
        if _SET_TARGETS_READONLY.search(stmt.sql):
            raise _not_implemented("Changing the readonly setting")
        self._switch_settings({})
        self._run(stmt.sql, DEFAULT_FORMAT)
        changes = {k: v for k, v in self._changed_settings().items() if self._startup.get(k) != v}
        self._applied = changes  # the connection now carries them; the next request restores them
        if session is not None:
            session.settings.update(changes)
        return Outcome()

    def _use(self, stmt: Statement, session: SessionState | None) -> Outcome:
        """USE lasts for the session (or just this request), like in ClickHouse."""
        self._run(stmt.sql, DEFAULT_FORMAT)
        self._database = self._text("SELECT currentDatabase()").strip()
        if session is not None:
            session.database = self._database
        return Outcome()

    # -- state switching

    def _switch_database(self, database: str) -> None:
        if database != self._database:
            self._run(f"USE {_quote_ident(database)}", DEFAULT_FORMAT)
            self._database = database

    def _switch_settings(self, wanted: Mapping[str, str]) -> None:
        """Make the connection carry exactly startup + ``wanted``, with as few SETs as possible."""
        for name in [n for n in self._applied if n not in wanted]:
            self._restore(name)
        for name, value in wanted.items():
            if self._applied.get(name) != value:
                if not _SETTING_NAME.match(name):
                    raise ServerError.make(115, "UNKNOWN_SETTING", f"Invalid setting name {name!r}")
                self._run(f"SET {name} = {_quote_value(value)}", DEFAULT_FORMAT)
                self._applied[name] = value

    def _restore(self, name: str) -> None:
        startup = self._startup.get(name)
        literal = "DEFAULT" if startup is None else _startup_literal(startup)
        self._run(f"SET {name} = {literal}", DEFAULT_FORMAT)
        del self._applied[name]

    def _changed_settings(self) -> dict[str, str]:
        rows = self._text("SELECT name, value FROM system.settings WHERE changed AND name != 'database'", "JSONEachRow")
        return {row["name"]: row["value"] for row in map(json.loads, rows.splitlines())}

    # -- raw access

    def _run(self, sql: str, fmt: str, bind: dict[str, str] | None = None, conn: Any = None) -> Any:
        try:
            return (conn or self._conn).query(sql, fmt, params=bind or None)
        except Exception as exc:
            raise ServerError.from_engine(exc) from exc

    def _text(self, sql: str, fmt: str = DEFAULT_FORMAT) -> str:
        return self._run(sql, fmt).bytes().decode()


def _pieces(chunks: tuple[Any, ...], size: int) -> Iterator[bytes]:
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])


def _summary(result: Any) -> dict[str, str]:
    """X-ClickHouse-Summary as ClickHouse writes it: every value a string."""
    return {
        "read_rows": str(result.rows_read()),
        "read_bytes": str(result.bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "elapsed_ns": str(int(result.elapsed() * 1e9)),
    }
