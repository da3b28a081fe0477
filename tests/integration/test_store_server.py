"""The chDB store endpoint, driven by the real clickhouse-connect client.

Production points the same DSN at a ClickHouse server, so these tests use
nothing but an ordinary ``clickhouse_connect.get_client(host=..., port=...)``
against ``python -m driftline.store.server`` running as its own process
(the only process allowed to open the chDB path), and check what services
rely on: the connect handshake, typed round trips with and without
compression, errors as DatabaseError, settings that do not leak between
clients, concurrent writers in separate processes, and durability.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chdb  # noqa: F401  (a dependency: its absence must fail, not skip)
import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

ROWS = 100_000
START_TIMEOUT = 60.0
#: The endpoint's user and password, created by the ``credentials`` fixture for every server of this module.
LOGIN: dict[str, str] = {}
CREDENTIALS_FILE: list[Path] = []
COLUMNS = ["id", "name", "score", "count", "event_time", "scores", "labels", "model", "error"]
TABLE_DDL = """
    CREATE TABLE {table} (
        id String,
        name String,
        score Float64,
        count Int64,
        event_time DateTime64(3),
        scores Map(String, Float64),
        labels Map(String, String),
        model LowCardinality(String),
        error Nullable(Float64)
    ) ENGINE = ReplacingMergeTree
    ORDER BY id
"""


# ---------------------------------------------------------------- server process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as response:
            return response.read() == b"Ok.\n"
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def credentials(tmp_path_factory) -> None:
    """One credentials file (0600, as the endpoint would create it) for every server this module starts."""
    from driftline.store.credentials import load_or_create_credentials

    path = tmp_path_factory.mktemp("credentials") / "store-credentials.json"
    created = load_or_create_credentials(path)
    LOGIN.update(username=created.user, password=created.password)
    CREDENTIALS_FILE[:] = [path]


def _basic_auth() -> dict[str, str]:
    token = base64.b64encode(f"{LOGIN['username']}:{LOGIN['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _server_command(path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "driftline.store.server", "--path", str(path), "--port", str(port),
            "--credentials", str(CREDENTIALS_FILE[0])]


@contextmanager
def running_server(path: Path, log: Path) -> Iterator[int]:
    """Start the endpoint in its own process and wait (bounded) until /ping answers."""
    port = _free_port()
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            _server_command(path, port),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"store server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM lets uvicorn run the lifespan shutdown, which closes the chDB store cleanly."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def port(tmp_path_factory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("store_server")
    with running_server(root / "store", root / "server.log") as server_port:
        yield server_port


def _client(port: int, **kwargs):
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, **LOGIN, **kwargs)


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def rows() -> list[list]:
    base = dt.datetime(2024, 5, 1, 12, 0, 0)
    return [
        [
            f"ev-{i:07d}",
            f"name {i} ünïcode",
            i / 7,
            i * 1_000_003 - 5,
            base + dt.timedelta(milliseconds=37 * i),
            {"p": i / 3, "q": -1.5},
            {"label": str(i % 2), "src": "test"},
            f"model-{i % 4}",
            None if i % 3 == 0 else i / 11,
        ]
        for i in range(ROWS)
    ]


# ---------------------------------------------------------------- tests


def test_ping_and_get_queries(port):
    assert _ping(port)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/?query=SELECT%2040%2B2", headers=_basic_auth())
    with urllib.request.urlopen(request) as response:
        assert response.read() == b"42\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/?query=CREATE%20TABLE%20x%20(a%20Int8)%20ENGINE%3DMemory", headers=_basic_auth()))
    assert err.value.code == 403
    assert err.value.headers["X-ClickHouse-Exception-Code"] == "164"


def test_connect_handshake_and_command(port):
    client = _client(port)
    assert client.server_version.count(".") >= 2
    assert client.command("SELECT 1") == 1
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]
    summary = client.command("CREATE TABLE IF NOT EXISTS handshake (a Int8) ENGINE = Memory")
    assert hasattr(summary, "written_rows")  # DDL returns a summary, not a result, as with ClickHouse
    assert client.command("SELECT a FROM handshake") == ""  # rows-returning statement, empty result


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False], ids=str)
def test_round_trip_100k_rows(port, rows, compress):
    client = _client(port, compress=compress)
    table = f"events_{str(compress).lower()}"
    client.command(TABLE_DDL.format(table=table))

    summary = client.insert(table, rows, column_names=COLUMNS)
    assert summary.written_rows == ROWS

    result = client.query(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY id")
    assert result.row_count == ROWS
    assert [list(r) for r in result.result_rows] == rows
    assert client.command(f"SELECT count() FROM {table}") == ROWS

    numbers = client.query_np(f"SELECT count, score FROM {table} ORDER BY id")
    assert numbers["count"].tolist() == [r[3] for r in rows]
    frame = client.query_df(f"SELECT id, model, error FROM {table} ORDER BY id")
    assert frame["model"].tolist() == [r[7] for r in rows]
    assert int(frame["error"].isna().sum()) == sum(r[8] is None for r in rows)


def test_replacing_merge_tree_dedups_with_final(port, rows):
    client = _client(port)
    client.command(TABLE_DDL.format(table="dedup"))
    client.insert("dedup", rows[:1000], column_names=COLUMNS)
    client.insert("dedup", rows[:10], column_names=COLUMNS)
    assert client.command("SELECT count() FROM dedup") == 1010
    assert client.command("SELECT count() FROM dedup FINAL") == 1000


def test_columns_only_probe_and_formats(port):
    client = _client(port)
    assert client.query("SELECT 1 AS a, 'x' AS b LIMIT 0").column_names == ("a", "b")
    assert client.raw_query("SELECT 1 AS a", fmt="JSONEachRow") == b'{"a":1}\n'
    assert json.loads(client.raw_query("SELECT 2 AS a FORMAT JSON"))["data"] == [{"a": 2}]


def test_sql_error_raises_database_error_with_server_text(port):
    client = _client(port)
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT * FROM table_that_does_not_exist")
    assert err.value.code == 60
    assert "table_that_does_not_exist" in str(err.value)
    assert "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(DatabaseError) as err:
        client.command("SELEKT 1")
    assert "Syntax error" in str(err.value)


def test_failed_insert_writes_nothing(port):
    client = _client(port)
    client.command("CREATE TABLE bad_insert (a Int64, b String) ENGINE = MergeTree ORDER BY a")
    with pytest.raises(DatabaseError) as err:
        client.raw_insert("bad_insert", ["a", "b"], insert_block=b"1,ok\nnot-a-number,x\n", fmt="CSV")
    assert err.value.code in (6, 27, 72, 117)
    assert client.command("SELECT count() FROM bad_insert") == 0


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("zstd", None), ("lz4", None), (None, None)],
    ids=["gzip", "deflate", "zstd", "lz4", "plain"],
)
def test_raw_insert_with_encoded_body(port, encoding, encode):
    """raw_insert sends the INSERT as the query parameter and the (compressed) data as the body."""
    if encoding == "zstd":
        from backports import zstd

        encode = zstd.compress
    if encoding == "lz4":
        import lz4.frame

        encode = lz4.frame.compress
    client = _client(port)
    table = f"raw_{encoding or 'plain'}"
    client.command(f"CREATE TABLE {table} (a Int64, b String) ENGINE = MergeTree ORDER BY a")
    data = b"".join(f"{i},row {i}\n".encode() for i in range(500))
    block = encode(data) if encode else data
    summary = client.raw_insert(table, ["a", "b"], insert_block=block, fmt="CSV", compression=encoding)
    assert summary.written_rows == 500
    assert client.command(f"SELECT sum(a) FROM {table}") == sum(range(500))


def test_compressed_responses(port):
    from backports import zstd

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/?query=SELECT%20number%20FROM%20numbers(1000)&enable_http_compression=1",
        headers={"Accept-Encoding": "zstd", **_basic_auth()},
    )
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Encoding"] == "zstd"
        body = zstd.decompress(response.read())
    assert body == b"".join(f"{i}\n".encode() for i in range(1000))


def test_bind_parameters_in_url_and_form(port):
    client = _client(port)
    result = client.query("SELECT {x:String} AS s, {y:Array(Int32)} AS a", parameters={"x": "it's", "y": [1, 2]})
    assert result.result_rows == [("it's", [1, 2])]
    big = "z" * 50_000  # too long for a URL: clickhouse-connect switches to a multipart form
    assert client.query("SELECT length({x:String})", parameters={"x": big}).result_rows == [(50_000,)]


def test_settings_do_not_leak_between_clients(port):
    tuned = _client(port, settings={"max_block_size": 1234})
    plain = _client(port)
    default = plain.command("SELECT getSetting('max_block_size')")
    assert tuned.command("SELECT getSetting('max_block_size')") == 1234
    assert plain.command("SELECT getSetting('max_block_size')") == default

    plain.command("SET max_block_size = 777")  # lasts for plain's session only, as in ClickHouse
    assert plain.command("SELECT getSetting('max_block_size')") == 777
    assert tuned.command("SELECT getSetting('max_block_size')") == 1234
    assert _client(port).command("SELECT getSetting('max_block_size')") == default


def test_database_parameter_and_use(port):
    _client(port).command("CREATE DATABASE IF NOT EXISTS other")
    assert _client(port, database="other").command("SELECT currentDatabase()") == "other"
    client = _client(port)
    client.command("USE other")
    assert client.command("SELECT currentDatabase()") == "other"
    assert _client(port).command("SELECT currentDatabase()") == "default"


_WORKER = textwrap.dedent(
    """
    import os
    import sys
    import clickhouse_connect

    port, first, batches, size = map(int, sys.argv[1:])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress="lz4",
                                           username=os.environ["STORE_USER"], password=os.environ["STORE_PASSWORD"])
    for b in range(batches):
        start = first + b * size
        client.insert("concurrent", [[i, f"w{first}"] for i in range(start, start + size)], column_names=["id", "who"])
    """
)


def test_two_processes_insert_concurrently(port):
    client = _client(port)
    client.command("CREATE TABLE concurrent (id Int64, who String) ENGINE = ReplacingMergeTree ORDER BY id")
    batches, size = 10, 5_000
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(first), str(batches), str(size)],
                         env={**os.environ, "STORE_USER": LOGIN["username"], "STORE_PASSWORD": LOGIN["password"]})
        for first in (0, 1_000_000)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    assert client.command("SELECT count() FROM concurrent") == 2 * batches * size
    assert client.command("SELECT uniqExact(id) FROM concurrent") == 2 * batches * size
    assert client.command("SELECT uniqExact(who) FROM concurrent") == 2


def test_data_persists_across_server_restart_and_path_has_one_owner(tmp_path, rows):
    store, log = tmp_path / "store", tmp_path / "server.log"
    with running_server(store, log) as first_port:
        client = _client(first_port)
        client.command(TABLE_DDL.format(table="durable"))
        client.insert("durable", rows[:5000], column_names=COLUMNS)
        second = subprocess.run(
            _server_command(store, _free_port()),
            capture_output=True,
            timeout=120,
        )
        assert second.returncode != 0  # the path is owned: a second server must refuse, not corrupt it
    with running_server(store, log) as second_port:
        client = _client(second_port)
        assert client.command("SELECT count() FROM durable") == 5000
        assert client.query("SELECT name FROM durable WHERE id = 'ev-0004999'").result_rows == [(rows[4999][1],)]


# ---------------------------------------------------------------- protocol helpers (no server needed)


def test_insert_head_parsing_keeps_binary_data_intact():
    from driftline.store.server.statements import parse_statement

    native = b"\t\x01\x02binary \n\x00"  # starts with a whitespace byte, as a 9-column Native block does
    stmt = parse_statement("", b"INSERT INTO t (`a`, \"b\") FORMAT Native\n" + native, "TabSeparated")
    assert (stmt.kind, stmt.sql, stmt.fmt) == ("insert", 'INSERT INTO t (`a`, "b")', "Native")
    assert b"".join(bytes(part) for part in stmt.data) == native

    stmt = parse_statement("INSERT INTO t FORMAT CSV", b"1,2\n", "TabSeparated")
    assert b"".join(bytes(part) for part in stmt.data) == b"1,2\n"
    assert parse_statement("", b"INSERT INTO t VALUES ('FORMAT CSV')", "TSV").kind == "query"
    assert parse_statement("", b"SELECT 1\n FORMAT JSON", "TSV").fmt == "JSON"


def test_multi_statements_are_refused_like_clickhouse():
    from driftline.store.server.errors import ServerError
    from driftline.store.server.statements import parse_statement

    assert parse_statement("", b"SELECT ';' ; -- trailing", "TSV").kind == "query"
    with pytest.raises(ServerError) as err:
        parse_statement("", b"SELECT 1; SET readonly = 1", "TSV")
    assert err.value.code == 62


def test_lz4_body_made_of_several_frames():
    import lz4.frame

    from driftline.store.server.compression import decode_body

    body = lz4.frame.compress(b"first block ") + lz4.frame.compress(b"second block")
    assert decode_body(body, "lz4") == b"first block second block"
