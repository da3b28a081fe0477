"""``driftline store serve`` attacked from outside, as a process on the same host (or a web page) would.

The endpoint runs as its own process (``python -m driftline.entry.cli store serve
--port N``) with ``DRIFTLINE_HOME`` in a temporary folder. Each attack of
issue 8 is sent over plain HTTP, and its effect is checked where it would
land: the host file that must not be written, the local HTTP service that
must not be reached, the table that must still be there, the endpoint and
its parent process that must still be alive.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from driftline.testing.kafka import free_port

START_TIMEOUT_S = 60.0


@dataclass
class Endpoint:
    url: str
    proc: subprocess.Popen
    home: Path
    log: Path

    @property
    def login(self) -> tuple[str, str]:
        data = json.loads((self.home / "store-credentials.json").read_text())
        return data["user"], data["password"]

    def post(self, sql: str, headers: dict[str, str] | None = None, auth: bool = True, **params: str) -> httpx.Response:
        """A plain POST of ``sql`` as text/plain, the request a web page or a script could send."""
        sent = {"Content-Type": "text/plain", **(headers or {})}
        if auth:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
        return httpx.post(self.url, content=sql.encode(), headers=sent, params=params, timeout=30)


def _env(home: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}, "DRIFTLINE_HOME": str(home)}


def _pings(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=1).content == b"Ok.\n"
    except httpx.HTTPError:
        return False


@contextmanager
def running_endpoint(home: Path, *extra: str) -> Iterator[Endpoint]:
    """``driftline store serve`` on a free port, waited for (bounded) until /ping answers."""
    port = free_port()
    log = home.parent / f"endpoint-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.entry.cli", "store", "serve", "--port", str(port), *extra],
                                env=_env(home), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = Endpoint(f"http://127.0.0.1:{port}", proc, home, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _pings(endpoint.url):
            assert proc.poll() is None, f"endpoint exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"endpoint not up:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[Endpoint]:
    root = tmp_path_factory.mktemp("store-security")
    home = root / "home"
    with running_endpoint(home) as running:
        running.post("CREATE TABLE predictions (id String) ENGINE = ReplacingMergeTree ORDER BY id").raise_for_status()
        running.post("INSERT INTO predictions VALUES ('kept')").raise_for_status()
        yield running


@pytest.fixture
def local_service() -> Iterator[tuple[str, list[str]]]:
    """Another service on this host: its URL, and the paths it was asked for."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret of a local service\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", hits
    finally:
        server.shutdown()
        server.server_close()


def _refused(response: httpx.Response, status: int = 403, code: int = 497) -> None:
    assert response.status_code == status, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == str(code), response.text


def _still_serving(endpoint: Endpoint) -> None:
    assert endpoint.proc.poll() is None, endpoint.log.read_text()[-3000:]
    assert _pings(endpoint.url)
    response = endpoint.post("SELECT id FROM predictions FINAL")
    assert response.status_code == 200 and response.text == "kept\n"


# ---------------------------------------------------------------- credentials


def test_credentials_file_is_private(endpoint):
    path = endpoint.home / "store-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    user, password = endpoint.login
    log = endpoint.log.read_text()
    assert str(path) in log and password not in log  # says where, never what


@pytest.mark.parametrize(
    "how",
    ["none", "wrong password", "wrong user", "clickhouse default user", "garbage basic"],
)
def test_requests_without_the_credentials_are_refused(endpoint, how):
    user, password = endpoint.login
    headers = {
        "none": {},
        "wrong password": {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}x".encode()).decode()},
        "wrong user": {"X-ClickHouse-User": "admin", "X-ClickHouse-Key": password},
        "clickhouse default user": {"Authorization": "Basic " + base64.b64encode(b"default:").decode()},
        "garbage basic": {"Authorization": "Basic !!!"},
    }[how]
    response = endpoint.post("SELECT 1", headers=headers, auth=False)
    _refused(response, status=401, code=516)
    assert "AUTHENTICATION_FAILED" in response.text and password not in response.text


def test_every_clickhouse_way_of_sending_credentials_is_accepted(endpoint):
    user, password = endpoint.login
    assert endpoint.post("SELECT 1").text == "1\n"  # Basic
    assert endpoint.post("SELECT 2", {"X-ClickHouse-User": user, "X-ClickHouse-Key": password}, auth=False).text == "2\n"
    assert endpoint.post("SELECT 3", auth=False, user=user, password=password).text == "3\n"
    with pytest.raises(DatabaseError) as err:
        clickhouse_connect.get_client(dsn=endpoint.url)
    assert "516" in str(err.value) and "AUTHENTICATION_FAILED" in str(err.value)


# ---------------------------------------------------------------- browsers


def test_requests_from_a_browser_are_refused_even_with_credentials(endpoint):
    _refused(endpoint.post("SELECT 1", {"Origin": "http://evil.example"}))
    _refused(endpoint.post("SELECT 1", {"Origin": "null"}))
    _refused(endpoint.post("SELECT 1", {"Sec-Fetch-Site": "cross-site"}))
    assert httpx.get(f"{endpoint.url}/ping").status_code == 200  # health checks need no credentials...
    assert httpx.get(f"{endpoint.url}/ping", headers={"Origin": "http://evil.example"}).status_code == 403  # ...nor a page


# ---------------------------------------------------------------- escapes and admin statements


def test_host_files_are_neither_read_nor_written(endpoint, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read\n")
    marker = tmp_path / "written.txt"
    attacks = [
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT file('{secret}')",
        f"SELECT * FROM `file`('{secret}', 'LineAsString')",
        f"INSERT INTO FUNCTION file('{marker}', 'LineAsString') SELECT 'pwned'",
        f"SELECT 'pwned' INTO OUTFILE '{marker}'",
        f"CREATE TABLE leak (line String) ENGINE = File(LineAsString, '{secret}')",
    ]
    for sql in attacks:
        response = endpoint.post(sql)
        _refused(response)
        assert "do not read" not in response.text
    assert not marker.exists()
    _still_serving(endpoint)


def test_other_local_services_are_not_reached(endpoint, local_service):
    url, hits = local_service
    assert httpx.get(url).status_code == 200 and hits == ["/"]  # the service is really there
    for sql in (f"SELECT * FROM url('{url}probe', 'LineAsString')",
                f"SELECT * FROM urlCluster('default', '{url}probe', 'LineAsString')",
                f"CREATE TABLE reach (line String) ENGINE = URL('{url}probe', LineAsString)"):
        _refused(endpoint.post(sql))
    assert hits == ["/"]


@pytest.mark.parametrize(
    "sql",
    ["DROP TABLE predictions", "TRUNCATE TABLE predictions", "ALTER TABLE predictions DELETE WHERE 1",
     "RENAME TABLE predictions TO gone", "DETACH TABLE predictions", "KILL QUERY WHERE 1", "SYSTEM SHUTDOWN",
     "SYSTEM KILL", "SET readonly = 0"],
)
def test_destructive_and_admin_statements_are_refused(endpoint, sql):
    _refused(endpoint.post(sql))
    _still_serving(endpoint)


def test_system_shutdown_spares_the_process_group_of_whoever_started_the_endpoint(tmp_path):
    """A script starts the endpoint as its child (same process group), sends SYSTEM SHUTDOWN, and lives on.

    chDB would answer SYSTEM SHUTDOWN by signalling the whole group. The script
    runs in a session of its own, so a regression kills it, not pytest.
    """
    script = textwrap.dedent(
        """
        import base64, json, os, subprocess, sys, time, httpx
        port, home = sys.argv[1], sys.argv[2]
        child = subprocess.Popen([sys.executable, "-m", "driftline.entry.cli", "store", "serve", "--port", port],
                                 env={**os.environ, "DRIFTLINE_HOME": home}, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert child.poll() is None and time.monotonic() < deadline, "endpoint did not start"
            time.sleep(0.1)
        creds = json.load(open(os.path.join(home, "store-credentials.json")))
        auth = "Basic " + base64.b64encode(f"{creds['user']}:{creds['password']}".encode()).decode()
        status = httpx.post(url, content=b"SYSTEM SHUTDOWN", headers={"Authorization": auth}).status_code
        after = httpx.post(url, content=b"SELECT 41 + 1", headers={"Authorization": auth}).text
        print(json.dumps({"shutdown_status": status, "child_alive": child.poll() is None, "after": after,
                          "same_group": os.getpgid(child.pid) == os.getpgid(0)}), flush=True)
        child.terminate()
        child.wait(30)
        """
    )
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-c", script, str(free_port()), str(home)], env=_env(home),
                            capture_output=True, text=True, timeout=120, start_new_session=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shutdown_status": 403, "child_alive": True, "after": "42\n", "same_group": True}


def test_reads_run_with_chdb_readonly(endpoint):
    """Defense in depth: a plain read runs on chDB's readonly=1 connection, whatever the policy decided."""
    assert endpoint.post("SELECT getSetting('readonly')").text == "1\n"
    assert endpoint.post("SELECT getSetting('readonly')", max_threads="2").text == "0\n"  # settings need the main one


def test_allow_admin_lifts_the_policy(endpoint, tmp_path):
    """Same DRIFTLINE_HOME, store elsewhere: the credentials file is reused; DROP TABLE runs."""
    before = (endpoint.home / "store-credentials.json").read_bytes()
    with running_endpoint(endpoint.home, "--path", str(tmp_path / "admin-store"), "--allow-admin") as admin:
        assert admin.login == endpoint.login
        admin.post("CREATE TABLE scratch (a Int8) ENGINE = MergeTree ORDER BY a").raise_for_status()
        assert admin.post("DROP TABLE scratch").status_code == 200
        assert admin.post("EXISTS TABLE scratch").text == "0\n"
        _refused(admin.post("SYSTEM SHUTDOWN"))  # never, even for an admin
        _refused(admin.post("SELECT 1", {"Origin": "http://evil.example"}))
    assert (endpoint.home / "store-credentials.json").read_bytes() == before


def test_no_auth_is_refused_off_loopback(tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "driftline.entry.cli", "store", "serve", "--host", "0.0.0.0",
                             "--port", str(free_port()), "--no-auth"], env=_env(home), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "loopback" in result.stderr
    assert not (home / "store").exists()  # refused before the store was opened


# ---------------------------------------------------------------- driftline's own clients


def test_driftline_store_client_and_sql_command_still_work(endpoint, monkeypatch):
    from driftline.store import Store

    monkeypatch.setenv("DRIFTLINE_HOME", str(endpoint.home))
    store = Store(endpoint.url)  # no user in the DSN: the credentials file under DRIFTLINE_HOME is used
    try:
        store.migrate()
        store.insert("service_state", [{"service": "security-test", "snapshot": "{}", "offsets": "{}",
                                        "saved_at": datetime.now(timezone.utc)}])
        assert store.scalar("SELECT count() FROM service_state FINAL WHERE service = 'security-test'") == 1
    finally:
        store.close()
    env = {**_env(endpoint.home), "DRIFTLINE_STORE_DSN": endpoint.url}
    result = subprocess.run([sys.executable, "-m", "driftline.entry.cli", "sql", "--format", "json",
                             "SELECT service FROM service_state FINAL WHERE service = 'security-test'"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"service": "security-test"}]
    env["DRIFTLINE_STORE_DSN"] = endpoint.url.replace("http://", "http://intruder:guess@")  # the DSN's user wins
    result = subprocess.run([sys.executable, "-m", "driftline.entry.cli", "sql", "SELECT 1"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "516" in result.stderr
