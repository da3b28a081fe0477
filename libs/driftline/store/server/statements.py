"""What a request asks to run: ClickHouse's "query parameter + body" parsed into one Statement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from driftline.store.server.errors import ServerError

DEFAULT_FORMAT = "TabSeparated"  # ClickHouse's default_format over HTTP
MAX_INSERT_HEAD = 256 * 1024  # ClickHouse's max_query_size: where an INSERT's FORMAT clause must be
RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS", "CHECK", "("})


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
