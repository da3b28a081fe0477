"""A real Kafka broker and a real Apicurio schema registry for local tests.

Why real processes: driftline's contracts are Kafka delivery semantics and the
Confluent wire format; mocks would test our assumptions, not the system. Why
Maven Central: it is the one source of JVM software every machine of this project
can reach (no Docker, no tarball downloads), so jars are fetched with ``mvn`` from
the manifests in ``infra/kafka/pom.xml`` and ``infra/apicurio/pom.xml`` and cached
under ``~/.cache/driftline/`` (``$DRIFTLINE_CACHE_DIR`` overrides it).

Used by ``tests/integration/conftest.py`` and by the CLI behind ``make kafka-up``::

    python -m driftline.testing.kafka up|down|status

``up`` leaves both servers running, records pids and ports in
``infra/.run/state.json`` and writes ``infra/.run/env`` (``KAFKA_BOOTSTRAP=...``,
``SCHEMA_REGISTRY_URL=...``) for shells and other tools to source.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
INFRA_DIR = REPO_ROOT / "infra"
RUN_DIR = INFRA_DIR / ".run"
STATE_FILE = RUN_DIR / "state.json"
ENV_FILE = RUN_DIR / "env"
KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J2 = INFRA_DIR / "kafka" / "log4j2.properties"
APICURIO_POM = INFRA_DIR / "apicurio" / "pom.xml"

CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 17
MVN_TIMEOUT_S = 900.0
KAFKA_READY_TIMEOUT_S = 120.0
APICURIO_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
#: As docker-compose's broker. Its live set is about 170 MB under load; a heap that starts at
#: 128 MB grows through frequent young and mixed collections (68-69 pauses of 5-32 ms in a 16 s
#: run at 5,000 events/s, against 38-45 with the heap whole from the start).
KAFKA_HEAP = ["-Xms512m", "-Xmx512m"]
APICURIO_HEAP = ["-Xms64m", "-Xmx384m"]

log = logging.getLogger(__name__)


class InfraError(RuntimeError):
    """The local Kafka/Apicurio stack could not be fetched, started or reached.

    The message always names what is missing or which command failed, so a skipped
    or failed test tells the reader what to install or rerun.
    """


# --------------------------------------------------------------------------- tools


def _require_tool(name: str, why: str, install: str) -> str:
    """Path of executable ``name``, or an InfraError saying what to install."""
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"`{name}` not found on PATH: needed to {why}. Install it, e.g. `{install}`.")
    return path


@functools.cache
def require_java() -> str:
    """Path of a ``java`` that is at least Java 17 (Kafka 4 and Apicurio 3.0 need it).

    ``$JAVA_HOME/bin/java`` wins over PATH, as with Maven and Kafka's own scripts.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = _require_tool("java", "run the Kafka broker and Apicurio", "apt-get install openjdk-17-jre-headless")
    out = run_command([java, "-version"], "checking the Java version", timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise InfraError(f"could not read the Java version from `{java} -version`:\n{out}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0_x" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise InfraError(f"{java} is Java {major}; Kafka 4 and Apicurio 3 need Java {MIN_JAVA} or newer")
    return java


@functools.cache
def require_mvn() -> str:
    """Path of ``mvn``, which fetches the jars from Maven Central."""
    return _require_tool("mvn", "fetch Kafka and Apicurio from Maven Central", "apt-get install maven")


def run_command(cmd: list[str], what: str, timeout: float) -> str:
    """Run ``cmd`` to completion and return its combined output.

    Raises InfraError naming the exact command and quoting the end of its output,
    because a bare "exit status 1" from Maven is useless to whoever reads the CI log.
    """
    try:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise InfraError(f"{what}: cannot execute `{cmd[0]}` ({exc}); command: {shlex.join(cmd)}") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise InfraError(f"{what}: timed out after {timeout:.0f}s: {shlex.join(cmd)}\n{_tail(out)}") from exc
    if done.returncode != 0:
        raise InfraError(
            f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{_tail(done.stdout)}"
        )
    return done.stdout


def _tail(text: str, lines: int = 40) -> str:
    """Last ``lines`` lines of ``text``: enough context for an error message."""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- fetch


def cache_root() -> Path:
    """Where fetched jars live; ``$DRIFTLINE_CACHE_DIR`` lets a test start from nothing."""
    return Path(os.environ.get("DRIFTLINE_CACHE_DIR") or Path.home() / ".cache" / "driftline")


def _pom_property(pom: Path, name: str) -> str:
    """A ``<properties>`` value of ``pom``, so versions live in the pom only."""
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if match is None:
        raise InfraError(f"{pom} has no <{name}> property")
    return match.group(1).strip()


def _cache_dir(prefix: str, pom: Path, version: str) -> Path:
    """Cache directory keyed by version and pom hash: editing the pom refetches."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:10]
    return cache_root() / f"{prefix}-{version}-{digest}"


def _fetch_once(target: Path, fill: Callable[[Path], None]) -> Path:
    """Populate ``target`` with ``fill`` unless a previous fetch completed.

    ``fill`` writes into a scratch directory that is renamed into place only after
    it succeeded, so an interrupted download or two concurrent test sessions never
    leave a half-filled cache that later looks complete.
    """
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp makes it 0700; the cache is not secret
    try:
        fill(scratch)
        (scratch / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        if target.exists() and not (target / ".complete").exists():  # not made by this code
            shutil.rmtree(target, ignore_errors=True)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # not just a concurrent session that won
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _mvn(pom: Path, goal_args: list[str], what: str) -> None:
    """Run Maven against one of our manifest poms; batch mode, quiet, no ANSI colours in errors."""
    run_command([require_mvn(), "-B", "-q", "-Dstyle.color=never", "-f", str(pom), *goal_args], what,
                timeout=MVN_TIMEOUT_S)


def fetch_kafka() -> Path:
    """Directory of the Kafka broker's jars (classpath ``<dir>/*``), fetched if missing."""
    version = _pom_property(KAFKA_POM, "kafka.version")
    target = _cache_dir("kafka", KAFKA_POM, version)

    def fill(scratch: Path) -> None:
        _mvn(KAFKA_POM, ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={scratch}"],
             f"fetching Kafka {version} jars from Maven Central")
        if not list(scratch.glob("kafka_2.13-*.jar")):
            raise InfraError(f"Maven ran but no kafka_2.13 jar appeared in {scratch}")

    return _fetch_once(target, fill)


def fetch_apicurio() -> Path:
    """Path of the Apicurio Registry runner jar, fetched and unpacked if missing."""
    version = _pom_property(APICURIO_POM, "apicurio.version")
    target = _cache_dir("apicurio", APICURIO_POM, version)

    def fill(scratch: Path) -> None:
        _mvn(APICURIO_POM, ["dependency:copy", f"-DoutputDirectory={scratch}"],
             f"fetching Apicurio Registry {version} (tar.gz, classifier all) from Maven Central")
        archives = list(scratch.glob("apicurio-registry-app-*.tar.gz"))
        if len(archives) != 1:
            raise InfraError(f"Maven ran but found {len(archives)} Apicurio archives in {scratch}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(scratch, filter="data")
        archives[0].unlink()  # ~100 MB; ~/.m2 still holds a copy

    return _apicurio_runner(_fetch_once(target, fill))


def _apicurio_runner(home: Path) -> Path:
    """The jar to ``java -jar``: 3.0.x ships ``*-runner.jar``, 3.3.x ``quarkus-run.jar``."""
    candidates = [home / "quarkus-run.jar", *sorted(home.glob("*-runner.jar"))]
    for jar in candidates:
        if jar.is_file():
            return jar
    raise InfraError(f"no Apicurio runner jar (quarkus-run.jar or *-runner.jar) in {home}")


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (good enough on a test machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """One JVM we started: enough to find, probe, diagnose and stop it later.

    ``popen`` is set in the process that started it; after a reload from
    ``state.json`` (``make kafka-down``) only the pid is known.
    """

    name: str
    address: str
    pid: int
    workdir: Path
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    popen: Optional[subprocess.Popen] = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        """True while the JVM runs and is still the process we started."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_is_ours(self.pid, self.workdir)

    def log_tail(self, lines: int = 40) -> str:
        """End of the JVM's stdout/stderr log, for error messages."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it is still there after ``timeout``."""
        if not self.alive():
            self._reap()
            return
        _signal_group(self.pid, signal.SIGTERM)
        if not self._wait_gone(timeout):
            log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, self.pid, timeout)
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(10.0)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                self._reap()
                return True
            time.sleep(0.1)
        return False

    def _reap(self) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass

    def to_state(self) -> dict:
        """JSON-able record for ``infra/.run/state.json``."""
        return {"name": self.name, "address": self.address, "pid": self.pid, "workdir": str(self.workdir),
                "log_path": str(self.log_path), "ports": self.ports}

    @classmethod
    def from_state(cls, data: dict) -> "Service":
        return cls(name=data["name"], address=data["address"], pid=int(data["pid"]),
                   workdir=Path(data["workdir"]), log_path=Path(data["log_path"]), ports=dict(data["ports"]))


def _pid_is_ours(pid: int, workdir: Path) -> bool:
    """Whether ``pid`` is alive and its command line names our workdir.

    The check matters because pids are reused: ``make kafka-down`` after a reboot
    must never signal some unrelated process that inherited the number.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and f"-Ddriftline.workdir={workdir}".encode() in raw


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group we created with ``start_new_session`` (pgid == pid)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _spawn(name: str, cmd: list[str], workdir: Path, die_with_parent: bool) -> subprocess.Popen:
    """Start a JVM detached from our terminal, logging to ``<workdir>/<name>.log``.

    ``die_with_parent`` (used by pytest fixtures) wraps the command in
    ``setpriv --pdeathsig TERM`` so a killed test run cannot leave JVMs behind;
    ``make kafka-up`` turns it off because there the servers must outlive the CLI.
    """
    if die_with_parent and (setpriv := shutil.which("setpriv")):
        cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as out:
        out.write(f"# {shlex.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, start_new_session=True)


def wait_until(service: Service, ready: Callable[[], bool], timeout: float) -> float:
    """Poll ``ready`` until it holds; return the seconds it took.

    Fails fast when the JVM exits, and on timeout; both errors quote the log tail,
    because that is where the JVM says why (port in use, bad config, wrong Java).
    """
    start = time.monotonic()
    deadline = start + timeout
    delay = 0.1
    while True:
        if not service.alive():
            raise InfraError(f"{service.name} exited before it was ready (log {service.log_path}):\n"
                             f"{service.log_tail()}")
        if ready():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise InfraError(f"{service.name} not ready at {service.address} after {timeout:.0f}s "
                             f"(log {service.log_path}):\n{service.log_tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _quiet_kafka_logger() -> logging.Logger:
    """A muted logger for probe clients: librdkafka would print every refused connection to stderr."""
    probe_log = logging.getLogger("driftline.testing.kafka.probe")
    probe_log.disabled = True
    return probe_log


# --------------------------------------------------------------------------- Kafka


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (like Uuid.randomUuid).

    >>> len(new_cluster_id())
    22
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cid


def kafka_properties(data_dir: Path, broker_port: int, controller_port: int,
                     overrides: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Broker config for a single-node KRaft broker+controller on 127.0.0.1.

    Replication factors and ISR are 1 because there is one node; the initial
    rebalance delay is 0 so consumer groups settle at once in tests; topic
    auto-creation is OFF so code and tests must create topics (with explicit
    partition counts), exactly as in production. ``overrides`` win.
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
    }
    props.update(overrides or {})
    return props


def _write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def _kafka_jvm(java: str, libs: Path, workdir: Path, heap: list[str]) -> list[str]:
    """Common JVM prefix: classpath of fetched jars, our quiet log4j2 config, a marker."""
    return [java, *heap, "-XX:+ExitOnOutOfMemoryError", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}", f"-Ddriftline.workdir={workdir}",
            "-cp", str(libs / "*")]


def start_kafka(workdir: Path, *, die_with_parent: bool = True, ready_timeout: float = KAFKA_READY_TIMEOUT_S,
                overrides: Optional[dict[str, str]] = None) -> Service:
    """Fetch (if needed), format and start a single-node Kafka; return once AdminClient works.

    ``workdir`` holds server.properties, the data dir and kafka.log; the caller owns
    it (a temp dir in tests, ``infra/.run/kafka`` for ``make kafka-up``).
    """
    java = require_java()
    libs = fetch_kafka()
    workdir.mkdir(parents=True, exist_ok=True)
    broker_port, controller_port = free_port(), free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    config = workdir / "server.properties"
    _write_properties(config, kafka_properties(workdir / "data", broker_port, controller_port, overrides))

    run_command(
        [*_kafka_jvm(java, libs, workdir, ["-Xmx256m"]), "kafka.tools.StorageTool", "format",
         "--cluster-id", new_cluster_id(), "--config", str(config)],
        "formatting KRaft storage", timeout=180,
    )
    popen = _spawn("kafka", [*_kafka_jvm(java, libs, workdir, KAFKA_HEAP), "kafka.Kafka", str(config)],
                   workdir, die_with_parent)
    service = Service(name="kafka", address=f"127.0.0.1:{broker_port}", pid=popen.pid, workdir=workdir,
                      log_path=workdir / "kafka.log", popen=popen,
                      ports={"broker": broker_port, "controller": controller_port})
    try:
        took = wait_until(service, lambda: kafka_ready(service.address, broker_port), ready_timeout)
    except BaseException:
        service.stop()
        raise
    log.info("kafka ready at %s in %.1fs (pid %d)", service.address, took, service.pid)
    return service


def kafka_ready(bootstrap: str, port: Optional[int] = None) -> bool:
    """Readiness = the broker answers a metadata request listing itself."""
    if port is not None and not _port_open(port):
        return False
    from confluent_kafka.admin import AdminClient  # heavy import; only when probing

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet_kafka_logger(),
                         "socket.connection.setup.timeout.ms": 2000})
    try:
        metadata = admin.list_topics(timeout=3)
    except Exception:  # KafkaException while the broker is still starting
        return False
    return bool(metadata.brokers)


# --------------------------------------------------------------------------- Apicurio


def start_apicurio(workdir: Path, *, die_with_parent: bool = True,
                   ready_timeout: float = APICURIO_READY_TIMEOUT_S) -> Service:
    """Fetch (if needed) and start Apicurio Registry with in-memory storage on 127.0.0.1.

    Returns once ``GET /apis/ccompat/v7/subjects`` answers 200; ``address`` is the
    ccompat base URL to hand to confluent-kafka's SchemaRegistryClient.
    """
    java = require_java()
    runner = fetch_apicurio()
    workdir.mkdir(parents=True, exist_ok=True)
    port, management_port = free_port(), free_port()
    cmd = [
        java, *APICURIO_HEAP, "-XX:+ExitOnOutOfMemoryError", f"-Ddriftline.workdir={workdir}",
        f"-Djava.io.tmpdir={workdir}",
        "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
        # 3.3.x also opens a management interface (default :9000); keep it local and free.
        "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={management_port}",
        # The default storage is already in-memory H2; say so, so nobody wonders.
        "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=h2",
        "-Dquarkus.log.level=WARN", "-Dquarkus.log.category.\"io.apicurio\".level=WARN",
        "-Dquarkus.http.access-log.enabled=false", "-Dquarkus.banner.enabled=false",
        "-jar", str(runner),
    ]
    popen = _spawn("apicurio", cmd, workdir, die_with_parent)
    url = f"http://127.0.0.1:{port}{CCOMPAT_PATH}"
    service = Service(name="apicurio", address=url, pid=popen.pid, workdir=workdir,
                      log_path=workdir / "apicurio.log", popen=popen,
                      ports={"http": port, "management": management_port})
    try:
        took = wait_until(service, lambda: apicurio_ready(url), ready_timeout)
    except BaseException:
        service.stop()
        raise
    log.info("apicurio ready at %s in %.1fs (pid %d)", url, took, service.pid)
    return service


def apicurio_ready(ccompat_url: str) -> bool:
    """Readiness = the Confluent-compatible API lists subjects (200)."""
    try:
        return httpx.get(f"{ccompat_url}/subjects", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def rss_mib(pid: int) -> Optional[float]:
    """Resident memory of ``pid`` in MiB (from /proc), for the numbers we report."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- CLI (make kafka-up / kafka-down)


def _load_state() -> list[Service]:
    if not STATE_FILE.exists():
        return []
    return [Service.from_state(entry) for entry in json.loads(STATE_FILE.read_text())["services"]]


def _save_state(services: list[Service]) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({"services": [s.to_state() for s in services]}, indent=2) + "\n")
    by_name = {s.name: s for s in services}
    ENV_FILE.write_text(
        f"KAFKA_BOOTSTRAP={by_name['kafka'].address}\nSCHEMA_REGISTRY_URL={by_name['apicurio'].address}\n"
    )


def _stop_all(services: list[Service]) -> None:
    """Stop services in reverse start order and delete their work dirs."""
    for service in reversed(services):
        service.stop()
        if service.alive():
            print(f"warning: {service.name} pid {service.pid} is still running", file=sys.stderr)
        else:
            shutil.rmtree(service.workdir, ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)
    ENV_FILE.unlink(missing_ok=True)


def cmd_up(_: argparse.Namespace) -> int:
    """Start Kafka and Apicurio unless both already run; print where they listen."""
    services = _load_state()
    if services and all(s.alive() for s in services):
        print("already running")
        return cmd_status(_)
    _stop_all(services)  # a half-dead previous run
    started: list[Service] = []
    try:
        for name, start in (("kafka", start_kafka), ("apicurio", start_apicurio)):
            t0 = time.monotonic()
            started.append(start(RUN_DIR / name, die_with_parent=False))
            print(f"{name}: ready in {time.monotonic() - t0:.1f}s at {started[-1].address} (pid {started[-1].pid})")
    except BaseException:
        _stop_all(started)
        raise
    _save_state(started)
    print(ENV_FILE.read_text(), end="")
    print(f"(also in {ENV_FILE}; stop with `make kafka-down`)")
    return 0


def cmd_down(_: argparse.Namespace) -> int:
    """Stop whatever ``up`` started (only pids whose command line names our work dirs)."""
    services = _load_state()
    if not services:
        print("nothing running (no state file)")
        return 0
    _stop_all(services)
    print("stopped: " + ", ".join(s.name for s in services))
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    """Print each service's pid, address, liveness, readiness and RSS; exit 1 unless all are ready."""
    services = _load_state()
    if not services:
        print("not running")
        return 1
    healthy = True
    for s in services:
        ready = s.alive() and (kafka_ready(s.address) if s.name == "kafka" else apicurio_ready(s.address))
        healthy &= ready
        rss = rss_mib(s.pid) if s.alive() else None
        print(f"{s.name}: pid {s.pid} {'ready' if ready else 'NOT READY'} at {s.address}"
              + (f" rss {rss:.0f} MiB" if rss else "") + f" log {s.log_path}")
    return 0 if healthy else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftline.testing.kafka", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("up", cmd_up), ("down", cmd_down), ("status", cmd_status)):
        sub.add_parser(name, help=func.__doc__.split("\n")[0]).set_defaults(func=func)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe otherwise
    try:
        return args.func(args)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
