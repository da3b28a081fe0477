"""Serve one embedded chDB store over ClickHouse's HTTP protocol.

Only one process may open a chDB path ("Error initializing EmbeddedServer"
for a second one), yet several driftline services share one store. The owner
process runs this endpoint; every other process uses an ordinary
``clickhouse_connect.get_client(host=..., port=...)``, exactly as it would
against the real ClickHouse server that production points the same DSN at.
So this module speaks what clickhouse-connect really sends:

* the SQL in the POST body, the ``query`` URL parameter, or a multipart form
  (clickhouse-connect's form encoding for large bind values);
* a ``FORMAT`` clause or the ``default_format`` parameter for the result;
* settings and ``param_*`` bind values as URL parameters, next to transport
  parameters (``database``, ``session_id``, ``query_id``, ...);
* an insert as one body: ``INSERT INTO t (cols) FORMAT Native`` plus the data,
  possibly compressed as a whole (``Content-Encoding`` lz4/zstd/gzip/deflate);
* ``Accept-Encoding`` for compressed results;
* errors as ``Code: N. DB::Exception: ...`` with HTTP 4xx/5xx and
  ``X-ClickHouse-Exception-Code``, so the client raises ``DatabaseError``.

chDB gets one connection, used under a lock: statements run one at a time.
ClickHouse scopes settings and the current database to a request (or to a
``session_id``); here they are switched on the shared connection with SET and
USE before each statement, and only when they differ from what the previous
statement ran with, so a request never sees another's settings and a steady
stream of requests costs no extra statements.

Run it with ``python -m driftline.store.http_server --path P --port N``.
There is no authentication: bind it to 127.0.0.1 (the default).
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import json
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import lz4.frame

try:  # Python 3.14+ ships zstd; before that clickhouse-connect itself uses the backport
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

logger = logging.getLogger(__name__)

DEFAULT_FORMAT = "TabSeparated"  # ClickHouse's default_format over HTTP
SERVER_NAME = "driftline-chdb"
KEEP_ALIVE_SECONDS = 30  # as ClickHouse's keep_alive_timeout
DEFAULT_SESSION_TIMEOUT = 60.0  # as ClickHouse's default_session_timeout
MAX_INSERT_HEAD = 256 * 1024  # ClickHouse's max_query_size: where an INSERT's FORMAT clause must be
INSERT_CHUNK = 4 << 20  # bytes handed to chDB's streaming insert per call

# URL parameters that steer the HTTP exchange, not the engine. Several are also
# ClickHouse settings, but they mean nothing to an embedded engine and
# forwarding them would only cost SET statements.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout", "session_check",
        "query_id", "quota_key", "user", "password", "role", "buffer_size", "wait_end_of_query",
        "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
        "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close", "http_response_buffer_size",
        "http_native_compression_disable_checksumming_on_decompress", "add_http_cors_header",
        "readonly",
    }
)  # fmt: skip

# chDB's Python layer turns these pseudo formats into Python objects, not bytes.
PSEUDO_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})
RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS", "CHECK", "("})
TEXT_FORMAT_PREFIXES = ("tabseparated", "tsv", "csv", "json", "pretty", "values", "xml", "markdown", "vertical",
                        "customseparated", "template", "raw", "linea", "sqlinsert", "prometheus", "null")  # fmt: skip

# HTTP status ClickHouse answers for the common error codes (everything else is 500).
HTTP_STATUS_BY_CODE = {
    6: 400, 26: 400, 27: 400, 32: 400, 38: 400, 41: 400, 53: 400, 62: 400, 69: 400, 72: 400, 117: 400,
    36: 400, 47: 404, 46: 404, 50: 404, 60: 404, 63: 404, 73: 404, 81: 404, 115: 404,
    164: 403, 48: 501, 372: 404, 373: 423,
}  # fmt: skip


# ---------------------------------------------------------------- errors


class ServerError(Exception):
    """An error reported the way ClickHouse does: a numeric code and ``Code: N. DB::Exception: ...``.

    clickhouse-connect builds its DatabaseError from exactly this body and the
    ``X-ClickHouse-Exception-Code`` header, so callers see the engine's words.
    """

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text

    @classmethod
    def make(cls, code: int, name: str, message: str) -> ServerError:
        """Build an error raised by the endpoint itself, worded like the engine's."""
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, exc: BaseException) -> ServerError:
        """Keep chDB's own ``Code: N. DB::Exception`` text; drop chDB's Python-side prefixes."""
        message = str(exc)
        start = message.find("Code: ")
        if start < 0:
            return cls.make(1001, "STD_EXCEPTION", message.strip())
        text = message[start:].strip()
        match = re.match(r"Code: (\d+)", text)
        return cls(int(match.group(1)) if match else 1001, text)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE.get(self.code, 500)


def _not_implemented(what: str) -> ServerError:
    return ServerError.make(48, "NOT_IMPLEMENTED", f"{what} is not supported by the driftline chDB endpoint")


# ---------------------------------------------------------------- body decoding


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` (applied last-first, as HTTP lists them).

    clickhouse-connect compresses each insert block as its own frame, so every
    decoder here accepts a concatenation of frames/members.
    """
    for encoding in reversed([e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]):
        body = _decode_one(body, encoding)
    return body


def _decode_one(body: bytes, encoding: str) -> bytes:
    try:
        if encoding in ("identity", ""):
            return body
        if encoding == "lz4":
            return _lz4_frames(body)
        if encoding == "zstd":
            return zstd.decompress(body)
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return _inflate(body)
    except Exception as exc:  # corrupt or truncated input: the client's fault, report it as ClickHouse would
        raise ServerError.make(271, "CANNOT_DECOMPRESS", f"Cannot decode {encoding} request body: {exc}") from exc
    raise ServerError.make(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}")


def _lz4_frames(body: bytes) -> bytes:
    """lz4.frame.decompress stops after one frame; clickhouse-connect sends one per block."""
    view, pos, parts = memoryview(body), 0, []
    while pos < len(body):
        part, used = lz4.frame.decompress(view[pos:], return_bytes_read=True)
        parts.append(part)
        pos += used
    return b"".join(parts)


def _inflate(body: bytes) -> bytes:
    """HTTP 'deflate' is zlib-wrapped, but some clients send a raw deflate stream."""
    try:
        return zlib.decompress(body)
    except zlib.error:
        return zlib.decompress(body, -zlib.MAX_WBITS)


def encode_body(body: bytes, encoding: str | None) -> bytes:
    """Compress a whole response as one frame (clickhouse-connect's lz4 reader expects exactly one)."""
    if encoding == "lz4":
        return lz4.frame.compress(body)
    if encoding == "zstd":
        return zstd.compress(body)
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)  # ClickHouse's http_zlib_compression_level
    if encoding == "deflate":
        return zlib.compress(body, 3)
    return body


def choose_encoding(accept_encoding: str | None, enabled: bool) -> str | None:
    """First of the client's listed encodings we can produce; ClickHouse compresses only when enabled."""
    if not enabled or not accept_encoding:
        return None
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("lz4", "zstd", "gzip", "deflate"):
            return name
    return None


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statement:
    """One request's work: a query, an insert with its data, or a SET / USE the server must track.

    ``fmt`` is the output format of a query or the input format of an insert.
    """

    kind: str  # "query" | "insert" | "set" | "use"
    sql: str
    fmt: str = DEFAULT_FORMAT
    returns_rows: bool = False
    data: tuple[Any, ...] = ()


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INSERT_TOKEN = re.compile(  # quoted strings/identifiers and comments are single tokens, so their words never count
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|[^\sA-Za-z_'"`/;-]+|\s+|.""",
    re.S,
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)(?:\s+SETTINGS\b[^;]*)?\s*;?\s*$", re.I)
_SET_TARGETS_READONLY = re.compile(r"\breadonly\b", re.I)


def first_keyword(text: str) -> str:
    """The statement's leading keyword, upper-cased ("(" for a parenthesised SELECT)."""
    pos = _LEADING_NOISE.match(text).end()
    if text[pos : pos + 1] == "(":
        return "("
    word = _WORD.match(text, pos)
    return word.group(0).upper() if word else ""


def find_insert_format(head: str) -> tuple[int, str, int] | None:
    """For ``INSERT ... FORMAT name<data>``: (end of the SQL, format name, start of the data).

    None for an INSERT that carries its rows in SQL (VALUES, SELECT). The data
    starts after spaces and at most one line break, as in ClickHouse's parser,
    so a binary block that begins with a whitespace byte is not eaten.
    """
    tokens = _INSERT_TOKEN.finditer(head)
    for token in tokens:
        word = (token.group("word") or "").upper()
        if word in ("VALUES", "SELECT", "WITH"):
            return None
        if word == "FORMAT":
            return _format_and_data_start(head, token.start(), token.end())
    return None


def _format_and_data_start(head: str, sql_end: int, after_keyword: int) -> tuple[int, str, int] | None:
    name = re.compile(r"\s+([A-Za-z0-9_]+)").match(head, after_keyword)
    if not name:
        return None
    pos = name.end()
    while pos < len(head) and head[pos] in " \t\f":
        pos += 1
    if head.startswith("\r", pos):
        pos += 1
    if head.startswith("\n", pos):
        pos += 1
    return sql_end, name.group(1), pos


def parse_statement(query_param: str, body: bytes, default_format: str) -> Statement:
    """Turn ClickHouse's "query parameter followed by body" into one Statement.

    ClickHouse joins the two with a line break; for ``INSERT ... FORMAT x`` the data is
    whatever follows the clause, so it is handed over as byte slices, never
    decoded as text (clickhouse-connect's Native blocks are binary).
    """
    head = query_param.encode() if query_param else body
    tail = body if query_param else b""
    insert = _insert_with_data(head, tail)
    if insert is not None:
        return insert
    try:
        sql = f"{query_param}\n{body.decode()}" if query_param and body else query_param or body.decode()
    except UnicodeDecodeError as exc:
        raise ServerError.make(36, "BAD_ARGUMENTS", "Query is not valid UTF-8") from exc
    return _classify(sql, default_format)


def _insert_with_data(head: bytes, tail: bytes) -> Statement | None:
    window = head[:MAX_INSERT_HEAD].decode("latin-1")  # 1 byte = 1 char, so offsets stay byte offsets
    if first_keyword(window[:4096]) != "INSERT":
        return None
    found = find_insert_format(window)
    if found is None:
        return None
    sql_end, fmt, data_start = found
    sql = head[:sql_end].decode("utf-8", errors="replace").strip()
    return Statement("insert", sql, fmt=fmt, data=(memoryview(head)[data_start:], tail))


def _classify(sql: str, default_format: str) -> Statement:
    keyword = first_keyword(sql)
    if not keyword:
        raise ServerError.make(62, "SYNTAX_ERROR", "Empty query")
    _reject_multi_statements(sql)
    if keyword == "SET" and not re.match(r"\s*SET\s+(DEFAULT\s+)?ROLE\b", sql[_LEADING_NOISE.match(sql).end() :], re.I):
        return Statement("set", sql)
    if keyword == "USE":
        return Statement("use", sql)
    trailing = _TRAILING_FORMAT.search(sql[-4096:])
    fmt = trailing.group(1) if trailing else default_format
    return Statement("query", sql, fmt=fmt, returns_rows=keyword in RESULT_KEYWORDS)


def _reject_multi_statements(sql: str) -> None:
    """ClickHouse runs one statement per HTTP request; chDB would run them all, and a second
    statement could slip past the SET/USE bookkeeping that keeps requests isolated."""
    if ";" not in sql:
        return
    for token in _INSERT_TOKEN.finditer(sql):
        if token.group() == ";" and _LEADING_NOISE.sub("", sql[token.end() :]).strip(" \t\r\n;"):
            raise ServerError.make(62, "SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed)")


# ---------------------------------------------------------------- request options


@dataclass
class RequestOptions:
    """What a request's URL (and form) parameters ask for, split by who consumes them."""

    query: str = ""
    database: str | None = None
    default_format: str = DEFAULT_FORMAT
    session_id: str | None = None
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    session_check: bool = False
    query_id: str = ""
    http_compression: bool | None = None
    readonly: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)


def read_options(params: Mapping[str, str], method: str) -> RequestOptions:
    """Split parameters into transport, bind values (``param_x``) and engine settings.

    ClickHouse's own compressed-block protocol (``compress=1`` / ``decompress=1``)
    needs CityHash checksums nobody here can compute; clickhouse-connect does not
    use it (it relies on Content-Encoding), so it is refused rather than faked.
    """
    if params.get("compress") == "1" or params.get("decompress") == "1":
        raise _not_implemented("ClickHouse block compression (compress=1 / decompress=1)")
    opts = RequestOptions(
        query=params.get("query", ""),
        database=params.get("database") or None,
        default_format=params.get("default_format") or DEFAULT_FORMAT,
        session_id=params.get("session_id") or None,
        session_timeout=_float(params.get("session_timeout"), DEFAULT_SESSION_TIMEOUT),
        session_check=params.get("session_check") == "1",
        query_id=params.get("query_id") or str(uuid.uuid4()),
        http_compression=None if "enable_http_compression" not in params else params["enable_http_compression"] == "1",
        readonly=method in ("GET", "HEAD") or params.get("readonly", "0") not in ("", "0"),
    )
    if opts.default_format.lower() in PSEUDO_FORMATS:
        raise ServerError.make(73, "UNKNOWN_FORMAT", f"Unknown output format {opts.default_format}")
    for name, value in params.items():
        if name.startswith("param_"):
            opts.bind[name[len("param_") :]] = value
        elif name not in TRANSPORT_PARAMS:
            opts.settings[name] = value
    return opts


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def read_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data body (clickhouse-connect sends ``query`` and ``param_*`` this way).

    A part with a filename is ClickHouse "external data" (a temporary table
    sent with the query), which chDB cannot attach; it is refused.
    """
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise _not_implemented("External data (file parts in a form)")
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_payload(decode=True) or b"").decode()
    return fields


# ---------------------------------------------------------------- sessions


@dataclass
class SessionState:
    """What ClickHouse keeps per ``session_id``: SET values and the current database."""

    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    expires: float = 0.0


class SessionStore:
    """ClickHouse sessions, emulated: the one chDB connection is shared, so the server
    remembers each session's SET / USE and re-applies them to that session's requests.
    Temporary tables are not session-scoped (they live on the shared connection)."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def get(self, opts: RequestOptions) -> SessionState | None:
        if not opts.session_id:
            return None
        now = time.monotonic()
        with self._lock:
            self._drop_expired(now)
            state = self._sessions.get(opts.session_id)
            if state is None and opts.session_check:
                raise ServerError.make(372, "SESSION_NOT_FOUND", f"Session {opts.session_id} not found")
            if state is None:
                state = self._sessions[opts.session_id] = SessionState()
            state.expires = now + opts.session_timeout
            return state

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[key]


# ---------------------------------------------------------------- engine


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
    """The single chDB connection for a store path, and the per-request state switched on it.

    chDB allows one statement at a time per connection (a streaming insert
    blocks all others), so everything runs under one lock.
    """

    def __init__(self, path: str):
        from chdb import session as chdb_session  # heavy import, deferred until a store is really opened

        self._conn = chdb_session.Session(path)
        self._lock = threading.Lock()
        self.version, self.timezone = self._text("SELECT version(), timezone()").rstrip("\n").split("\t")
        self._startup = self._changed_settings()
        self.http_compression_default = self._text(
            "SELECT value FROM system.settings WHERE name = 'enable_http_compression'"
        ).strip() == "1"
        self.default_database = self._text("SELECT currentDatabase()").strip()
        self._database = self.default_database
        self._applied: dict[str, str] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def execute(self, stmt: Statement, opts: RequestOptions, session: SessionState | None) -> Outcome:
        """Run one statement with the request's (and its session's) database and settings."""
        settings = {**(session.settings if session else {}), **opts.settings}
        database = opts.database or (session.database if session else None) or self.default_database
        with self._lock:
            self._switch_database(database)
            self._switch_settings(settings)
            outcome = self._dispatch(stmt, opts, session)
        outcome.timezone = settings.get("session_timezone") or self.timezone
        return outcome

    def _dispatch(self, stmt: Statement, opts: RequestOptions, session: SessionState | None) -> Outcome:
        if stmt.kind == "insert":
            return self._insert(stmt)
        if stmt.kind == "set":
            return self._set(stmt, session)
        if stmt.kind == "use":
            return self._use(stmt, session)
        return self._query(stmt, opts.bind)

    # -- statements

    def _query(self, stmt: Statement, bind: dict[str, str]) -> Outcome:
        result = self._run(stmt.sql, stmt.fmt, bind)
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

    def _run(self, sql: str, fmt: str, bind: dict[str, str] | None = None) -> Any:
        try:
            return self._conn.query(sql, fmt, params=bind or None)
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


# ---------------------------------------------------------------- HTTP


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def content_type(fmt: str) -> str:
    lowered = fmt.lower()
    if lowered.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lowered.startswith("json"):
        return "application/json; charset=UTF-8"
    if lowered.startswith(TEXT_FORMAT_PREFIXES):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


class StoreApp:
    """ASGI application: ClickHouse's HTTP interface over one ChdbEngine.

    The body is read in full before the engine lock is taken, so a slow
    client uploading an insert never holds up the others.
    """

    def __init__(self, path: str):
        self.engine = ChdbEngine(path)
        self.sessions = SessionStore()

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            response = await self._http(scope, receive)
            await _send(send, response)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.engine.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Callable) -> HttpResponse:
        method, path = scope["method"], scope["path"]
        params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        if path == "/ping" or (path == "/" and method in ("GET", "HEAD") and "query" not in params):
            return HttpResponse(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
        if path != "/":
            return HttpResponse(404, b"There is no handle " + path.encode() + b"\n", [("Content-Type", "text/plain")])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive)
        if body is None:  # the client went away mid-upload: never run a truncated insert
            return HttpResponse(400, b"Client disconnected before the request body was complete\n")
        return await anyio.to_thread.run_sync(self.respond, method, params, headers, body)

    def respond(self, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> HttpResponse:
        """Everything after the body has arrived: runs in a worker thread."""
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            return self._execute(method, {**params, "query_id": query_id}, headers, body)
        except ServerError as exc:
            logger.info("query %s failed with code %s", query_id, exc.code)
            return self._error(exc, query_id)
        except Exception as exc:  # a bug here must still reach the client as a ClickHouse error
            logger.exception("query %s: unexpected server failure", query_id)
            return self._error(ServerError.make(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)

    def _execute(self, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> HttpResponse:
        body = decode_body(body, headers.get("content-encoding"))
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            params = {**params, **read_form(headers["content-type"], body)}
            body = b""
        opts = read_options(params, method)
        stmt = parse_statement(opts.query, body, opts.default_format)
        if opts.readonly and not (stmt.returns_rows or stmt.kind in ("set", "use")):
            raise ServerError.make(164, "READONLY", "Cannot execute query in readonly mode (GET is read-only)")
        session = self.sessions.get(opts)
        outcome = self.engine.execute(stmt, opts, session)
        return self._success(outcome, opts, headers)

    def _success(self, outcome: Outcome, opts: RequestOptions, headers: dict[str, str]) -> HttpResponse:
        enabled = self.engine.http_compression_default if opts.http_compression is None else opts.http_compression
        encoding = choose_encoding(headers.get("accept-encoding"), enabled) if outcome.body else None
        body = encode_body(outcome.body, encoding)
        response = HttpResponse(200, body, self._common_headers(opts.query_id, outcome.timezone))
        response.headers.append(("X-ClickHouse-Summary", json.dumps(outcome.summary, separators=(",", ":"))))
        if outcome.result_format:
            response.headers.append(("X-ClickHouse-Format", outcome.result_format))
        response.headers.append(("Content-Type", content_type(outcome.result_format or DEFAULT_FORMAT)))
        if encoding:
            response.headers.append(("Content-Encoding", encoding))
        return response

    def _error(self, exc: ServerError, query_id: str) -> HttpResponse:
        text = exc.text if "(version " in exc.text else f"{exc.text} (version {self.engine.version})"
        headers = self._common_headers(query_id, self.engine.timezone)
        response = HttpResponse(exc.http_status, (text + "\n").encode(), headers)
        response.headers.append(("X-ClickHouse-Exception-Code", str(exc.code)))
        response.headers.append(("Content-Type", "text/plain; charset=UTF-8"))
        return response

    @staticmethod
    def _common_headers(query_id: str, timezone: str) -> list[tuple[str, str]]:
        return [
            ("X-ClickHouse-Server-Display-Name", SERVER_NAME),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", timezone),
            ("Keep-Alive", f"timeout={KEEP_ALIVE_SECONDS}"),
        ]


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    """The whole request body, or None if the client disconnected before sending all of it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send(send: Callable, response: HttpResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


# ---------------------------------------------------------------- entry points


def make_app(path: str) -> StoreApp:
    """Open the chDB store at ``path`` (this process becomes its only owner) and return the ASGI app."""
    return StoreApp(path)


def serve(path: str, host: str = "127.0.0.1", port: int = 8123) -> None:
    """Serve the store until SIGINT/SIGTERM; the chDB connection is closed on the way out."""
    import uvicorn

    try:
        app = make_app(path)
    except RuntimeError as exc:  # chDB's wording hides the usual cause
        raise SystemExit(f"cannot open chDB store {path!r} (is another process serving it?): {exc}") from None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # URLs carry SQL and bind values: keep them out of logs
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    logger.warning("serving chDB store %s on http://%s:%d", path, host, port)
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a chDB store over the ClickHouse HTTP protocol.")
    parser.add_argument("--path", required=True, help="chDB data directory (opened by this process only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.path, args.host, args.port)


if __name__ == "__main__":
    main()
