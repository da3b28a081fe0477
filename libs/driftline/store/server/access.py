"""What a caller may run: the endpoint's statement policy.

chDB runs inside the endpoint's process with that process's rights, so
every statement ClickHouse could use to leave the store (a table function or
engine that reaches files, URLs, other databases or programs, ``INTO
OUTFILE``, a custom disk) and every statement that destroys or administers
(``DROP``, ``TRUNCATE``, ``SYSTEM``, ``KILL``, mutations, ...) is refused
before it reaches the engine. The policy is deny-by-default: a statement is
allowed only if its kind is on the list below, and a function call is allowed
only if its name is not a table function (except the few that generate data
in memory) — the table functions are read from the engine itself at startup,
so those a newer chDB adds are refused without a code change.

Allowed without ``--allow-admin``:

* reads: ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``, ``EXISTS``,
  ``EXPLAIN``, ``CHECK``;
* ``INSERT INTO <table>`` (not ``INSERT INTO FUNCTION``);
* ``CREATE TABLE`` with a MergeTree-family (or Memory) engine and no table
  settings, ``CREATE DATABASE`` with the Atomic engine;
* ``ALTER TABLE`` adding, modifying, commenting or materialising columns and
  indexes (what schema migrations do);
* ``SET`` and ``USE``.

Settings that would lift these limits or point the engine at host paths
(``readonly``, ``allow_ddl``, ``*path*``, ``*file*``, ``disk``, ...) are
refused wherever they are given: URL parameters, ``SET``, ``SETTINGS``.

``SYSTEM SHUTDOWN`` and ``SYSTEM KILL`` are refused even with
``--allow-admin``: chDB answers them by signalling its whole process group,
which kills whatever started the endpoint too. Stop it with SIGTERM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from driftline.store.server.errors import ServerError
from driftline.store.server.lexer import Token, code_tokens
from driftline.store.server.statements import Statement

ACCESS_DENIED = 497

#: Table functions that only generate or reshape data in memory.
IN_MEMORY_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "generaterandom",
     "values", "null", "format", "view"}
)  # fmt: skip
#: Refused as function calls whatever the engine lists: table functions that leave the store
#: (so an engine that failed to list one still cannot reach it), chDB's ``python``/``eval``, the
#: scalar ``file()`` that reads a host file, and ``disk()`` (a table setting naming a host path).
ALWAYS_REFUSED_FUNCTIONS = frozenset(
    {"file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn",
     "hdfs", "hdfscluster", "azureblobstorage", "azureblobstoragecluster", "remote", "remotesecure", "cluster",
     "clusterallreplicas", "mysql", "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "bigquery",
     "ytsaurus", "executable", "executablepool", "input", "dictionary", "python", "eval", "iceberg", "deltalake",
     "hudi", "paimon", "prometheusquery", "prometheusqueryrange", "disk", "merge", "loop"}
)  # fmt: skip
READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "("})
#: Reads chDB's own ``readonly=1`` accepts (CHECK TABLE is not one of them).
READONLY_ENGINE_KEYWORDS = READ_KEYWORDS - {"CHECK"}
#: Table engines that keep their data in the store's own folder.
LOCAL_TABLE_ENGINES = frozenset(
    {"mergetree", "replacingmergetree", "summingmergetree", "aggregatingmergetree", "collapsingmergetree",
     "versionedcollapsingmergetree", "coalescingmergetree", "graphitemergetree", "memory"}
)  # fmt: skip
LOCAL_DATABASE_ENGINES = frozenset({"atomic"})
#: ALTER TABLE actions a schema migration needs (the first two words of each action).
MIGRATION_ALTER_ACTIONS = frozenset(
    {("ADD", "COLUMN"), ("ADD", "INDEX"), ("MODIFY", "COLUMN"), ("COMMENT", "COLUMN"), ("MODIFY", "COMMENT"),
     ("MATERIALIZE", "COLUMN"), ("MATERIALIZE", "INDEX")}
)  # fmt: skip
REFUSED_SETTINGS = frozenset({"readonly", "allow_ddl", "allow_introspection_functions", "format_schema"})
_REFUSED_SETTING_PARTS = re.compile(r"path|file|disk|storage_policy|format_template|named_collection", re.I)
#: ClickHouse statements this policy refuses as a whole (any other unknown first word is a syntax error).
CLICKHOUSE_STATEMENTS = frozenset(
    {"DROP", "DETACH", "ATTACH", "RENAME", "EXCHANGE", "TRUNCATE", "OPTIMIZE", "SYSTEM", "KILL", "GRANT", "REVOKE",
     "BACKUP", "RESTORE", "DELETE", "UPDATE", "UNDROP", "MOVE", "BEGIN", "START", "COMMIT", "ROLLBACK", "WATCH",
     "REPLACE", "PARALLEL"}
)  # fmt: skip
#: chDB signals its process group for these: never run, whatever the flags.
PROCESS_GROUP_KILLERS = frozenset({("SYSTEM", "SHUTDOWN"), ("SYSTEM", "KILL")})


@dataclass(frozen=True)
class Decision:
    """The policy's answer for an allowed statement.

    ``engine_readonly`` says the statement may run on chDB's own ``readonly=1``
    connection: a read that changes no setting (chDB refuses any setting
    change there) and does not look at settings (every setting reads as
    readonly there, which would mislead clickhouse-connect's handshake).
    """

    engine_readonly: bool


class StatementPolicy:
    """Decide, from a statement's tokens, whether the endpoint runs it.

    Parameters
    ----------
    table_functions
        Every table function the engine knows (``system.table_functions``);
        all but ``IN_MEMORY_TABLE_FUNCTIONS`` are refused as function calls.
    allow_admin
        Lift the policy (the operator's explicit ``--allow-admin``), except for
        the statements that would kill the endpoint's process group.
    """

    def __init__(self, table_functions: Iterable[str], allow_admin: bool = False):
        listed = {name.lower() for name in table_functions}
        self.refused_functions = frozenset((listed - IN_MEMORY_TABLE_FUNCTIONS) | ALWAYS_REFUSED_FUNCTIONS)
        self.allow_admin = allow_admin

    def check(self, stmt: Statement, settings: Mapping[str, str]) -> Decision:
        """Raise ``ServerError`` (497 ACCESS_DENIED) for a refused statement; otherwise say how to run it."""
        tokens = code_tokens(stmt.sql)
        keyword = _keyword(tokens, 0)
        if (keyword, _keyword(tokens, 1)) in PROCESS_GROUP_KILLERS:
            raise _denied(f"{keyword} {_keyword(tokens, 1)} would signal the endpoint's whole process group; "
                          "stop the endpoint with SIGTERM instead")
        if self.allow_admin:
            return Decision(engine_readonly=False)
        for name in settings:
            _check_setting(name)
        self._check_reach(tokens)
        _check_settings_clauses(tokens)
        kind = _KIND_CHECKS.get(keyword)
        if kind is None and keyword not in CLICKHOUSE_STATEMENTS:  # a typo: say so, as ClickHouse's parser would
            raise ServerError.make(62, "SYNTAX_ERROR", f"Syntax error: unknown statement {keyword or stmt.sql[:20]!r}")
        if kind is None:
            raise _denied(f"{keyword} statements are refused by the driftline store endpoint "
                          "(start it with --allow-admin to run them)")
        kind(tokens)
        touches_settings = any(t.is_name and t.name.lower() == "settings" for t in tokens)
        return Decision(engine_readonly=keyword in READONLY_ENGINE_KEYWORDS and not settings and not touches_settings)

    def _check_reach(self, tokens: list[Token]) -> None:
        """Refuse every call of a function that reaches outside the store, and INTO OUTFILE / FROM INFILE."""
        for i, token in enumerate(tokens):
            if not token.is_name:
                continue
            name = token.name.lower()
            if token.kind == "word" and name in ("outfile", "infile"):
                raise _denied(f"{token.text.upper()} reaches host files")
            if name in self.refused_functions and (_called(tokens, i) or _applied(tokens, i)):
                raise _denied(f"The function {token.name}() reaches outside the store")


def _called(tokens: list[Token], i: int) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1].text == "("


def _applied(tokens: list[Token], i: int) -> bool:
    """``APPLY name`` / ``APPLY(name)``: a column transformer calls the function by name."""
    before = [t.text.upper() for t in tokens[max(0, i - 2) : i]]
    return before[-1:] == ["APPLY"] or before == ["APPLY", "("]


def _keyword(tokens: list[Token], index: int) -> str:
    if index >= len(tokens):
        return ""
    token = tokens[index]
    return token.text.upper() if token.kind in ("word", "punct") else ""


def _denied(message: str) -> ServerError:
    return ServerError.make(ACCESS_DENIED, "ACCESS_DENIED", message)


def _check_setting(name: str) -> None:
    if name.lower() in REFUSED_SETTINGS or _REFUSED_SETTING_PARTS.search(name):
        raise _denied(f"Changing the setting {name} is refused by the driftline store endpoint")


def _check_settings_clauses(tokens: list[Token]) -> None:
    """Every ``name =`` after a SETTINGS keyword (query, insert or table settings)."""
    in_settings = False
    for i, token in enumerate(tokens):
        if token.kind == "word" and token.text.upper() == "SETTINGS":
            in_settings = True
        elif token.kind == "word" and token.text.upper() == "FORMAT":
            in_settings = False
        elif in_settings and token.is_name and i + 1 < len(tokens) and tokens[i + 1].text == "=":
            _check_setting(token.name)


# -- statement kinds


def _check_read(tokens: list[Token]) -> None:
    """Reads need nothing beyond the function and settings checks every statement gets."""


def _check_insert(tokens: list[Token]) -> None:
    words = [_keyword(tokens, i) for i in range(1, 4)]
    if words[0] != "INTO":
        raise _denied("INSERT must name its target with INTO")
    if words[1] == "FUNCTION" or words[1:3] == ["TABLE", "FUNCTION"]:
        raise _denied("INSERT INTO FUNCTION writes outside the store")


def _check_create(tokens: list[Token]) -> None:
    what = _keyword(tokens, 1)
    if what == "TABLE":
        _check_engine(tokens, LOCAL_TABLE_ENGINES, "table")
        if any(t.kind == "word" and t.text.upper() == "SETTINGS" for t in tokens):
            raise _denied("Table settings are refused in CREATE TABLE (they can place data on other disks)")
    elif what == "DATABASE":
        _check_engine(tokens, LOCAL_DATABASE_ENGINES, "database")
    else:
        raise _denied(f"CREATE {what} is refused by the driftline store endpoint (only TABLE and DATABASE)")


def _check_engine(tokens: list[Token], allowed: frozenset[str], what: str) -> None:
    for i, token in enumerate(tokens):
        if token.kind == "word" and token.text.upper() == "ENGINE":
            j = i + 1 + (i + 1 < len(tokens) and tokens[i + 1].text == "=")
            engine = tokens[j].name if j < len(tokens) and tokens[j].is_name else ""
            if engine.lower() not in allowed:
                raise _denied(f"The {what} engine {engine or '(missing)'} is refused by the driftline store endpoint")


def _check_alter(tokens: list[Token]) -> None:
    if _keyword(tokens, 1) != "TABLE":
        raise _denied(f"ALTER {_keyword(tokens, 1)} is refused by the driftline store endpoint")
    position = _after_table_name(tokens, 2)
    for action in _top_level_parts(tokens[position:]):
        head = (_keyword(action, 0), _keyword(action, 1))
        if head not in MIGRATION_ALTER_ACTIONS:
            raise _denied(f"ALTER TABLE ... {' '.join(head).strip()} is refused by the driftline store endpoint")


def _after_table_name(tokens: list[Token], start: int) -> int:
    """Index after ``name`` or ``db.name`` (the first token that is neither a name nor a dot after one)."""
    position = start
    while position < len(tokens) and tokens[position].is_name:
        position += 1
        if position < len(tokens) and tokens[position].text == ".":
            position += 1
        else:
            break
    return position


def _top_level_parts(tokens: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        depth += {"(": 1, ")": -1}.get(token.text, 0) if token.kind == "punct" else 0
        if depth == 0 and token.text == "," and token.kind == "punct":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _check_set(tokens: list[Token]) -> None:
    if _keyword(tokens, 1) in ("ROLE", "DEFAULT"):
        raise _denied("SET ROLE is refused by the driftline store endpoint")
    for i, token in enumerate(tokens[1:], start=1):
        if token.is_name and i + 1 < len(tokens) and tokens[i + 1].text == "=":
            _check_setting(token.name)


_KIND_CHECKS = {
    **{keyword: _check_read for keyword in READ_KEYWORDS},
    "INSERT": _check_insert,
    "CREATE": _check_create,
    "ALTER": _check_alter,
    "SET": _check_set,
    "USE": _check_read,
}
