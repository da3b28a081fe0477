"""The store endpoint's statement policy, lexer and credentials file, without a server.

The policy is checked against the table functions the installed chDB really
has, and the lexer's reading of tricky SQL against chDB's own (a statement
the lexer reads differently from ClickHouse could hide a call from the policy).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from driftline.store.credentials import (
    credentials_for_dsn,
    load_credentials,
    load_or_create_credentials,
)
from driftline.store.ddl import MIGRATIONS
from driftline.store.server.access import StatementPolicy
from driftline.store.server.errors import ServerError
from driftline.store.server.lexer import code_tokens
from driftline.store.server.statements import parse_statement


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory):
    from chdb import session

    sess = session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield sess
    sess.close()


@pytest.fixture(scope="module")
def policy(chdb_session) -> StatementPolicy:
    names = chdb_session.query("SELECT name FROM system.table_functions", "TabSeparated").bytes().decode().split()
    assert "file" in names and "url" in names  # the list really comes from the engine
    return StatementPolicy(names)


def _check(policy: StatementPolicy, sql: str, settings: dict[str, str] | None = None):
    return policy.check(parse_statement("", sql.encode(), "TabSeparated"), settings or {})


ALLOWED = [
    "SELECT version(), timezone()",
    "SELECT name, value, readonly FROM system.settings LIMIT 10000",
    "SELECT count() FROM predictions FINAL WHERE model = {m:String}",
    "SELECT 'file(''/etc/passwd'')', \"url\" FROM t -- file('/x')\n",
    "SELECT /* url('http://x') */ number FROM numbers(10)",
    "SELECT $$ file('/etc/passwd') $$",
    "WITH a AS (SELECT 1) SELECT * FROM a JOIN (SELECT 2) AS b ON 1",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SELECT * FROM generateRandom('a Int8') LIMIT 1",
    "SHOW TABLES", "DESCRIBE TABLE predictions", "EXISTS TABLE labels", "EXPLAIN SELECT 1",
    "INSERT INTO predictions (a, b) FORMAT Native",
    "INSERT INTO t VALUES ('url(x)')",
    "INSERT INTO t SELECT number FROM numbers(3)",
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32) ENGINE = MergeTree ORDER BY version",
    "CREATE TABLE handshake (a Int8) ENGINE = Memory",
    "CREATE DATABASE IF NOT EXISTS other",
    "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS reason String, ADD INDEX i reason TYPE bloom_filter",
    "ALTER TABLE db.t MODIFY COLUMN x Nullable(String)",
    "SET max_block_size = 777", "USE other",
    "SELECT 1 SETTINGS max_threads = 1",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_driftline_statements_are_allowed(policy, sql):
    _check(policy, sql)


def test_every_migration_is_allowed(policy):
    for _, _, statements in MIGRATIONS:
        for statement in statements:
            _check(policy, statement)


REFUSED = [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",  # the scalar file() reads host files too
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    'SELECT * FROM "fi\\x6ce"(\'/etc/passwd\', \'LineAsString\')',  # escapes undone, as ClickHouse does
    "SELECT * FROM file /* gap */ ('/etc/passwd')",
    "SELECT $$ ' $$, file('/etc/passwd')",  # a heredoc, not a string start, hides nothing
    "SELECT 'a''b', file('/etc/passwd')",
    "SELECT * APPLY(file) FROM (SELECT '/etc/passwd')",
    "SELECT * APPLY file FROM (SELECT '/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM t WHERE x IN (SELECT * FROM remote('h', db.t))",
    "WITH x AS (SELECT * FROM s3('http://h/b')) SELECT * FROM x",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM python(df)",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT 1 INTO OUTFILE '/tmp/out'",
    "INSERT INTO t FROM INFILE '/etc/passwd' FORMAT LineAsString",
    "INSERT INTO FUNCTION file('/tmp/x', 'LineAsString') SELECT 'x'",
    "INSERT INTO TABLE FUNCTION null('a Int8') VALUES (1)",
    "INSERT INTO t SELECT * FROM input('a Int8')",
    "CREATE TABLE f (a String) ENGINE = File(LineAsString, '/etc/passwd')",
    "CREATE TABLE u (a String) ENGINE = URL('http://h/', LineAsString)",
    "CREATE TABLE d (a Int8) ENGINE = Distributed(c, db, t)",
    "CREATE TABLE k (a Int8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/d/')",
    "CREATE TABLE c AS url('http://h/', LineAsString)",
    "CREATE OR REPLACE TABLE predictions (a Int8) ENGINE = MergeTree ORDER BY a",
    "CREATE DATABASE fs ENGINE = Filesystem('/etc')",
    "CREATE DICTIONARY d (k UInt64) PRIMARY KEY k SOURCE(FILE(path '/etc/passwd' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
    "CREATE USER u", "CREATE FUNCTION f AS x -> x", "CREATE VIEW v AS SELECT 1",
    "DROP TABLE predictions", "TRUNCATE TABLE predictions", "DETACH TABLE predictions", "ATTACH TABLE x",
    "RENAME TABLE a TO b", "EXCHANGE TABLES a AND b", "OPTIMIZE TABLE predictions FINAL",
    "ALTER TABLE predictions DELETE WHERE 1", "ALTER TABLE predictions UPDATE score = 0 WHERE 1",
    "ALTER TABLE predictions DROP COLUMN score", "ALTER TABLE predictions FREEZE",
    "ALTER TABLE predictions ADD COLUMN x String, DROP COLUMN score",
    "ALTER TABLE t ON CLUSTER c ADD COLUMN x String",
    "DELETE FROM predictions WHERE 1", "SYSTEM SHUTDOWN", "SYSTEM KILL", "SYSTEM FLUSH LOGS",
    "KILL QUERY WHERE 1", "GRANT ALL ON *.* TO u", "BACKUP TABLE t TO Disk('default', 'b')",
    "SET readonly = 0", "SET allow_ddl = 1", "SET max_threads = 2, user_files_path = '/'",
    "SET ROLE admin", "SELECT 1 SETTINGS readonly = 0", "SELECT 1 FORMAT TSV SETTINGS format_template_row = '/etc/passwd'",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_escapes_and_admin_statements_are_refused(policy, sql):
    with pytest.raises(ServerError) as err:
        _check(policy, sql)
    assert err.value.code == 497, err.value.text
    assert err.value.http_status == 403


def test_settings_sent_as_parameters_are_checked_too(policy):
    _check(policy, "SELECT 1", {"max_block_size": "1000"})
    for name in ("readonly", "allow_ddl", "format_schema", "input_format_something_path"):
        with pytest.raises(ServerError):
            _check(policy, "SELECT 1", {name: "1"})


def test_a_misspelt_statement_is_a_syntax_error_not_a_call(policy):
    with pytest.raises(ServerError) as err:
        _check(policy, "SELEKT 1")
    assert err.value.code == 62


def test_admin_lifts_the_policy_but_never_runs_process_group_killers(chdb_session):
    admin = StatementPolicy(["file"], allow_admin=True)
    _check(admin, "DROP TABLE predictions")
    _check(admin, "SELECT * FROM file('/etc/hostname')")
    for sql in ("SYSTEM SHUTDOWN", "system kill"):
        with pytest.raises(ServerError) as err:
            _check(admin, sql)
        assert "process group" in err.value.text


def test_only_plain_reads_go_to_the_engine_readonly_connection(policy):
    assert _check(policy, "SELECT count() FROM predictions").engine_readonly
    assert not _check(policy, "SELECT 1", {"max_threads": "2"}).engine_readonly  # chDB readonly refuses SETs
    assert not _check(policy, "SELECT name, readonly FROM system.settings").engine_readonly
    assert not _check(policy, "INSERT INTO t FORMAT Native").engine_readonly
    assert not _check(policy, "CHECK TABLE t").engine_readonly


@pytest.mark.parametrize(
    ("sql", "hidden_call"),
    [
        ("SELECT $$ ' $$, length('x')", True),  # heredoc: the call after it is code
        ("SELECT 1 #! comment length(\n, length('y')", True),
        ("SELECT 1 AS a$$b, length('z')", True),  # $$ inside an identifier starts no heredoc
        ("SELECT 'it''s', length('w')", True),
        ("SELECT 'length(' || 'x'", False),
        ("SELECT 1 -- length(\r, 2", False),  # a line comment runs through \r to \n
        ("SELECT \"le\\x6egth\"('v')", True),
    ],
)
def test_lexer_reads_tricky_sql_as_clickhouse_does(chdb_session, sql, hidden_call):
    """``length`` stands in for a refused function: the lexer must see a call exactly where chDB runs one."""
    tokens = code_tokens(sql)
    seen = any(t.is_name and t.name == "length" and i + 1 < len(tokens) and tokens[i + 1].text == "("
               for i, t in enumerate(tokens))
    assert seen == hidden_call
    chdb_session.query(sql, "TabSeparated")  # and chDB accepts it as valid SQL
    explained = chdb_session.query(f"EXPLAIN AST {sql}", "TabSeparated").bytes().decode()
    assert ("Function length" in explained) == hidden_call


# ---------------------------------------------------------------- credentials file


def test_credentials_file_is_created_0600_and_reused(tmp_path):
    path = tmp_path / "home" / "store-credentials.json"
    first = load_or_create_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.password) >= 40 and first.password not in repr(first)
    assert load_or_create_credentials(path) == first
    assert json.loads(path.read_text()) == {"user": first.user, "password": first.password}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_credentials_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "store-credentials.json"
    load_or_create_credentials(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="other users"):
        load_or_create_credentials(path)


def test_clients_send_the_file_only_for_http_dsns_without_a_user(tmp_path):
    path = tmp_path / "store-credentials.json"
    assert credentials_for_dsn("http://127.0.0.1:8123", path) is None  # no file yet
    created = load_or_create_credentials(path)
    assert credentials_for_dsn("http://127.0.0.1:8123", path) == created
    assert credentials_for_dsn("https://store.example:8443/db", path) == created
    assert credentials_for_dsn("http://alice:secret@127.0.0.1:8123", path) is None  # the DSN's user wins
    assert credentials_for_dsn("http://127.0.0.1:8123?username=alice", path) is None
    assert credentials_for_dsn(f"chdb://{tmp_path}/store", path) is None
    assert load_credentials(Path(tmp_path / "missing.json")) is None
