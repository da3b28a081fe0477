"""A distributed deployment under test, with the means to break it: kill, restart, take away.

:class:`Cluster` runs every driftline service as its own OS process (``driftline store
serve``, ``driftline serve registry|ingest|predictor|label-joiner|drift-detector|retrainer``)
over a Kafka broker it owns (so it can restart it) and a schema registry it is given. A test
names processes and says what happens to them::

    cluster.kill("predictor")            # SIGKILL, reaped, written to the timeline
    cluster.start("predictor")           # a new incarnation, new pid
    cluster.restart_broker()             # SIGTERM the broker, start it again on the same port and data
    cluster.wait_drained(timeout_s=300)  # every runner group has committed its topics to their ends

Every start, kill and unexpected exit is written to :class:`Timeline`. A process that exits
without the test having killed it is an *unscheduled exit*: it is recorded (exit code, log
tail) and, with ``revive=True``, started again so the run can still measure its counts;
:meth:`Cluster.unscheduled` lists them so a test can fail on them.

Nothing here sleeps in hope: every wait polls a condition until a deadline.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from driftline.testing.kafka import (
    KAFKA_HEAP,
    Service,
    _kafka_jvm,
    _spawn,
    fetch_kafka,
    free_port,
    kafka_ready,
    require_java,
    start_kafka,
    wait_until,
)

#: librdkafka would print every refused connection of the test's own clients while the broker restarts.
_QUIET = logging.getLogger("driftline.testing.chaos.kafka")
_QUIET.disabled = True

RUNNERS = ("predictor", "label-joiner", "drift-detector", "retrainer")
HTTP_SERVICES = ("registry", "ingest")
#: Topics each runner's group consumes, in pipeline order (a drained upstream feeds a drained downstream).
GROUP_TOPICS = {
    "predictor": ["features"],
    "label-joiner": ["predictions", "labels"],
    "drift-detector": ["predictions", "labeled"],
    "retrainer": ["retrain"],
}
START_TIMEOUT_S = 120.0
#: A process still alive this long after printing the error it exits with is hung.
HUNG_AFTER_S = 15.0


class Spawner:
    """Starts every child process from one thread that lives as long as the cluster.

    Why: children are started under ``setpriv --pdeathsig`` so they die with the test run; but the
    kernel sends that signal when the *thread* that forked them exits. A process started from a
    short-lived thread (a fault being injected, the watcher) would be killed when that thread ends.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="chaos-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, result = job
            try:
                result.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result.set_exception(exc)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (which forks) on the spawner thread; its result."""
        result: Future = Future()
        self._jobs.put((fn, result))
        return result.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(10)


class Timeline:
    """What happened when, in seconds since the run started; thread-safe, printed at the end."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.entries: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        with self._lock:
            self.entries.append((time.monotonic() - self.t0, text))
            print(f"{self.entries[-1][0]:8.1f}s  {text}", flush=True)  # live, for who watches the run (-s)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def render(self) -> str:
        with self._lock:
            return "\n".join(f"{t:8.1f}s  {text}" for t, text in self.entries)


@dataclass
class Process:
    """One driftline process; stdout and stderr go to ``log``, appended across incarnations."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    spawner: Spawner | None = None
    popen: subprocess.Popen | None = None
    incarnations: int = 0
    expected_exit: bool = False  # set while the test itself stops or kills it
    log_offset: int = 0  # where this incarnation's output starts in ``log``

    def start(self) -> int:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        cmd = [sys.executable, "-m", "driftline.entry.cli", *self.args]
        if setpriv := shutil.which("setpriv"):  # dies with the test run, whatever happens to it
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        with self.log.open("ab") as out:
            out.write(f"\n# --- start #{self.incarnations + 1}: {' '.join(self.args)}\n".encode())
            out.flush()
            def fork() -> subprocess.Popen:
                return subprocess.Popen(cmd, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

            self.popen = self.spawner.call(fork) if self.spawner is not None else fork()
        self.incarnations += 1
        self.expected_exit = False
        return self.popen.pid

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int, wait_s: float = 30.0) -> int | None:
        """Send ``sig`` and reap; the exit code, or None when it is still running after ``wait_s``."""
        assert self.popen is not None
        self.expected_exit = True
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    def wait_exit(self, timeout_s: float) -> int | None:
        """Its exit code once it exits within ``timeout_s``, else None (nothing is signalled)."""
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.alive() and self.signal(signal.SIGTERM, timeout_s) is None:
            self.signal(signal.SIGKILL, 10)

    def tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the log, without librdkafka's own (``%3|...``) chatter."""
        try:
            text = [line for line in self.log.read_text(errors="replace").splitlines() if not line.startswith("%")]
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text[-lines:])

    def output(self) -> str:
        """What this incarnation has written so far."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def consuming(self) -> bool:
        """A runner says ``<service>: consuming <topics>`` once it has subscribed."""
        return self.alive() and ": consuming " in self.output()

    def fatal_line(self) -> str | None:
        """The one-line error ``driftline`` prints before exiting 1, if this incarnation printed it."""
        lines = [line for line in self.output().splitlines() if line.startswith("driftline ")]
        return lines[-1] if lines else None


@dataclass(frozen=True)
class UnscheduledExit:
    """A process that exited although the test did not stop it."""

    name: str
    pid: int
    returncode: int | None  # None: it did not exit, see ``hung``
    at_s: float
    last_lines: str
    hung: bool = False  # printed its fatal error but kept running


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Broker:
    """A single-node KRaft broker this cluster owns, so it can be restarted on its port and data."""

    def __init__(self, workdir: Path, spawner: Spawner):
        self.workdir = workdir
        self.spawner = spawner
        self.service: Service = spawner.call(lambda: start_kafka(workdir, die_with_parent=True))
        self.address = self.service.address

    def restart(self) -> float:
        """SIGTERM (controlled shutdown), then the same broker again; seconds until it answers."""
        self.service.stop()
        cmd = [*_kafka_jvm(require_java(), fetch_kafka(), self.workdir, KAFKA_HEAP), "kafka.Kafka",
               str(self.workdir / "server.properties")]
        popen = self.spawner.call(lambda: _spawn("kafka", cmd, self.workdir, die_with_parent=True))
        port = self.service.ports["broker"]
        self.service = Service(name="kafka", address=self.address, pid=popen.pid, workdir=self.workdir,
                               log_path=self.workdir / "kafka.log", popen=popen, ports=self.service.ports)
        return wait_until(self.service, lambda: kafka_ready(self.address, port), START_TIMEOUT_S)

    def stop(self) -> None:
        self.service.stop()


class Cluster:
    """Every driftline service as its own process over one broker, a schema registry and the store endpoint.

    Parameters
    ----------
    root
        A temporary folder: DRIFTLINE_HOME, the store's chDB folder, the logs, the broker's data.
    schema_registry_url
        A Confluent-compatible schema registry (Apicurio's ccompat API in the tests).
    env
        Extra ``DRIFTLINE_*`` settings for every service (windows, partitions, ...).
    revive
        Start a process again when it exits without the test having stopped it (the exit
        is still recorded in :attr:`unscheduled`), so a run measures its counts to the end.
    """

    def __init__(self, root: Path, schema_registry_url: str, *, env: dict[str, str] | None = None,
                 registry_token: str = "chaos-registry-token", revive: bool = True):
        self.root = root
        self.schema_registry_url = schema_registry_url
        self.registry_token = registry_token
        self.revive = revive
        self.timeline = Timeline()
        self.unscheduled: list[UnscheduledExit] = []
        self.broker: Broker | None = None
        self.store_port, self.registry_port, self.ingest_port = free_port(), free_port(), free_port()
        self.store_url = f"http://127.0.0.1:{self.store_port}"
        self.registry_url = f"http://127.0.0.1:{self.registry_port}"
        self.ingest_url = f"http://127.0.0.1:{self.ingest_port}"
        self.metrics_ports = {name: free_port() for name in (*HTTP_SERVICES, *RUNNERS)}
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        self.extra_env = dict(env or {})
        self.env: dict[str, str] = {}
        self.procs: dict[str, Process] = {}
        self._lock = threading.RLock()  # the watcher and the test both start processes
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None
        self._to_revive: set[str] = set()
        self.spawner = Spawner()
        self._admin = None

    # -- bring up and tear down ------------------------------------------------------------

    def start_all(self) -> None:
        """Broker, store endpoint, registry, ingest and the four runners; returns when each answers."""
        self.broker = Broker(self.root / "kafka", self.spawner)
        self.timeline.note(f"broker up at {self.broker.address} (pid {self.broker.service.pid})")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
            "PYTHONUNBUFFERED": "1",
            "DRIFTLINE_HOME": str(self.home),
            "DRIFTLINE_KAFKA_BOOTSTRAP": self.broker.address,
            "DRIFTLINE_SCHEMA_REGISTRY_URL": self.schema_registry_url,
            "DRIFTLINE_STORE_DSN": self.store_url,
            "DRIFTLINE_REGISTRY_URL": self.registry_url,
            "DRIFTLINE_REGISTRY_TOKEN": self.registry_token,
            **self.extra_env,
        }
        logs = self.root / "logs"

        def process(name: str, *args: str) -> Process:
            env = dict(self.env)
            if name in self.metrics_ports:
                env["DRIFTLINE_METRICS_PORT"] = str(self.metrics_ports[name])
            return Process(name, list(args), env, logs / f"{name}.log", cwd=self.root, spawner=self.spawner)

        self.procs = {
            "store": process("store", "store", "serve", "--path", str(self.root / "store"),
                             "--port", str(self.store_port)),
            "registry": process("registry", "serve", "registry", "--port", str(self.registry_port)),
            "ingest": process("ingest", "serve", "ingest", "--port", str(self.ingest_port)),
            **{name: process(name, "serve", name) for name in RUNNERS},
        }
        self.start("store")
        self.start("registry")
        self.start("ingest")
        for name in RUNNERS:
            self.start(name, wait=False)
        for name in RUNNERS:
            self.wait_ready(name)
            self.wait_until(f"{name} in its consumer group", lambda n=name: self.group_stable(n), START_TIMEOUT_S)
        self._watching.set()
        self._watcher = threading.Thread(target=self._watch, name="chaos-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._watching.clear()
        if self._watcher is not None:
            self._watcher.join(5)
        for name in ("ingest", *RUNNERS, "registry", "store"):
            if name in self.procs:
                self.procs[name].stop()
        if self.broker is not None:
            self.broker.stop()
        self._admin = None
        self.spawner.close()

    # -- one process ----------------------------------------------------------------------

    def start(self, name: str, wait: bool = True) -> int:
        """Start ``name`` (again); with ``wait``, return once it answers (HTTP) or has joined its group."""
        with self._lock:
            pid = self.procs[name].start()
        self.timeline.note(f"start {name} (pid {pid}, incarnation {self.procs[name].incarnations})")
        if wait:
            self.wait_ready(name)
        return pid

    def wait_ready(self, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
        if name == "store":
            probe = lambda: _http_ok(f"{self.store_url}/ping")  # noqa: E731
        elif name in HTTP_SERVICES:
            url = self.registry_url if name == "registry" else self.ingest_url
            probe = lambda: _http_ok(f"{url}/healthz")  # noqa: E731
        else:
            probe = self.procs[name].consuming
        self.wait_until(f"{name} ready", probe, timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Signal ``name`` and reap it; its exit code. A process found dead already is recorded as unscheduled."""
        with self._lock:
            proc = self.procs[name]
            if not proc.alive():
                self._record_exit(proc)
            pid = proc.pid
            code = proc.signal(sig)
        self.timeline.note(f"{signal.Signals(sig).name} {name} (pid {pid}) -> exit {code}")
        return code

    def pids(self) -> dict[str, int | None]:
        return {name: p.pid for name, p in self.procs.items()}

    def restart_broker(self) -> None:
        self.timeline.note("broker: SIGTERM, restarting")
        took = self.broker.restart()
        self.timeline.note(f"broker back after {took:.1f}s (pid {self.broker.service.pid})")

    # -- watching for exits nobody asked for ---------------------------------------------------

    def _watch(self) -> None:
        """Record every exit the test did not cause; revive such a process after a second or two
        (a service that exits at once, say while a dependency is down, is not restarted in a tight loop)."""
        started_at: dict[str, float] = {}
        fatal_seen: dict[int, float] = {}  # pid -> when its fatal line was first seen
        while self._watching.is_set():
            with self._lock:
                for proc in self.procs.values():
                    if proc.popen is not None and not proc.expected_exit and proc.returncode() is not None:
                        self._record_exit(proc)
                        self._to_revive.add(proc.name)
                    elif proc.popen is not None and not proc.expected_exit and proc.fatal_line():
                        # It printed the error it exits with, yet runs on: stuck on its way out, once
                        # that has lasted HUNG_AFTER_S (an exiting process needs a moment to go).
                        noticed = fatal_seen.setdefault(proc.pid, time.monotonic())
                        if time.monotonic() - noticed > HUNG_AFTER_S and proc.alive():
                            self._record_exit(proc, hung=True)
                            proc.signal(signal.SIGKILL, 10)
                            self._to_revive.add(proc.name)
                    name = proc.name
                    if name in self._to_revive and self.revive and not proc.alive() \
                            and time.monotonic() - started_at.get(name, 0.0) > 2.0:
                        self._to_revive.discard(name)
                        started_at[name] = time.monotonic()
                        pid = proc.start()
                        self.timeline.note(f"revive {name} (pid {pid}): it had exited unscheduled")
                    elif proc.alive():
                        self._to_revive.discard(name)
            time.sleep(0.2)

    def _record_exit(self, proc: Process, hung: bool = False) -> None:
        if proc.expected_exit or any(u.pid == proc.pid for u in self.unscheduled):
            return
        proc.expected_exit = True  # recorded once
        tail = "\n".join(line for line in proc.tail(40).splitlines() if line.strip())[-2500:]
        exit_ = UnscheduledExit(proc.name, proc.pid, None if hung else proc.returncode(), self.timeline.elapsed(),
                                tail, hung=hung)
        self.unscheduled.append(exit_)
        what = f"HUNG: alive {HUNG_AFTER_S:.0f} s after its fatal error (killed by the test)" if hung else f"exit {exit_.returncode}"
        self.timeline.note(f"UNSCHEDULED EXIT {proc.name} (pid {proc.pid}) {what}: {_last_error_line(tail)}")

    # -- conditions --------------------------------------------------------------------------

    def wait_until(self, what: str, condition: Callable[[], Any], timeout_s: float) -> Any:
        """Poll ``condition`` until truthy; AssertionError with the log tails at the deadline."""
        deadline = time.monotonic() + timeout_s
        delay, last = 0.05, None
        while True:
            try:
                last = condition()
            except Exception as exc:  # noqa: BLE001 - a dependency being restarted: poll again
                last = f"{type(exc).__name__}: {exc}"
            if last and not isinstance(last, str):
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not reached after {timeout_s:.0f}s (last: {last!r})\n{self.logs()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def logs(self, *names: str) -> str:
        return "\n".join(f"----- {n} (alive={self.procs[n].alive()}) -----\n{self.procs[n].tail()}"
                         for n in names or self.procs)

    def _consumer(self, group: str) -> Consumer:
        return Consumer({"bootstrap.servers": self.broker.address, "group.id": group, "logger": _QUIET,
                         "enable.auto.commit": False, "socket.connection.setup.timeout.ms": 3000})

    def group_stable(self, service: str) -> bool:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:  # one client: librdkafka reconnects by itself after a broker restart
            self._admin = AdminClient({"bootstrap.servers": self.broker.address, "logger": _QUIET})
        group = f"driftline-{service}"
        description = self._admin.describe_consumer_groups([group])[group].result(timeout=5)
        return description.state.name == "STABLE" and len(description.members) >= 1

    def lag(self, service: str) -> int:
        """Records on the service's topics its group has not committed yet (log end - committed)."""
        consumer = self._consumer(f"driftline-{service}")
        try:
            topics = GROUP_TOPICS[service]
            partitions = [TopicPartition(t, p) for t in topics
                          for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
            committed = consumer.committed(partitions, timeout=10)
            total = 0
            for tp in committed:
                _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                total += high - max(tp.offset, 0)
            return total
        finally:
            consumer.close()

    def lags(self) -> dict[str, int]:
        """Per runner, in pipeline order: upstream is measured before downstream, so all zero means drained."""
        return {service: self.lag(service) for service in GROUP_TOPICS}

    def wait_drained(self, timeout_s: float) -> dict[str, int]:
        """Until every runner group's committed lag is 0 (checked upstream first)."""
        def drained() -> dict[str, int] | str:
            lags = self.lags()
            return lags if not any(lags.values()) else f"lags {lags}"

        return self.wait_until("consumer lag 0 on every runner group", drained, timeout_s)

    def read_topic(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        """Every (key, value) on ``topic`` from its beginning to its current end."""
        consumer = self._consumer(f"chaos-reader-{time.monotonic_ns()}")
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in metadata.partitions}
            consumer.assign([TopicPartition(topic, p, 0) for p in ends])
            got: list[tuple[bytes | None, bytes]] = []
            done = {p for p, end in ends.items() if end == 0}
            deadline = time.monotonic() + 120
            while len(done) < len(ends) and time.monotonic() < deadline:
                for m in consumer.consume(10_000, 1.0):
                    if m.error() is not None:
                        continue
                    got.append((m.key(), m.value()))
                    if m.offset() + 1 >= ends[m.partition()]:
                        done.add(m.partition())
            assert len(done) == len(ends), f"{topic}: read {len(got)} records, not to the end in 120 s"
            return got
        finally:
            consumer.close()


def _last_error_line(tail: str) -> str:
    """The line of a log tail that says why (the exception line of a traceback, else the last line)."""
    lines = [line for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "error" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "(empty log)"


@dataclass(order=True)
class Fault:
    """One scheduled fault: at ``at_fraction`` of the stream, do ``action`` (Cluster calls)."""

    at_fraction: float
    what: str = field(compare=False)
    action: Callable[[], None] = field(compare=False, repr=False)


def chaos_schedule(cluster: Cluster, rng, *, kills_each: int = 3, registry_outage_s: float = 30.0,
                   victims: tuple[str, ...] = RUNNERS) -> dict[str, list[Fault]]:
    """A seeded random schedule, as lanes of faults: one lane per victim with ``kills_each`` kill -9
    (each restarted after 0-2 s, the next kill only once it consumes again), and one lane for the
    infrastructure: a broker restart, a store-endpoint restart and the model registry down for
    ``registry_outage_s``. Lanes run side by side; the faults of a lane one after another."""

    def kill_and_restart(name: str, pause_s: float) -> Callable[[], None]:
        def act() -> None:
            cluster.kill(name)
            time.sleep(pause_s)  # the outage itself, part of the schedule
            cluster.start(name, wait=True)
        return act

    def restart_store() -> None:
        cluster.kill("store", signal.SIGTERM)
        cluster.start("store")

    def registry_outage() -> None:
        cluster.kill("registry", signal.SIGTERM)
        time.sleep(registry_outage_s)  # the outage itself, part of the schedule
        cluster.start("registry")

    lanes = {name: sorted(Fault(rng.uniform(0.05, 0.95), f"kill -9 {name}", kill_and_restart(name, rng.uniform(0, 2)))
                          for _ in range(kills_each)) for name in victims}
    lanes["infrastructure"] = sorted([
        Fault(rng.uniform(0.2, 0.8), "broker restart", cluster.restart_broker),
        Fault(rng.uniform(0.2, 0.8), "store endpoint restart", restart_store),
        Fault(rng.uniform(0.1, 0.7), f"registry down {registry_outage_s:.0f}s", registry_outage),
    ])
    return lanes


class ChaosMonkey:
    """Runs the lanes of a schedule against ``progress()`` (0..1): a fault fires once progress has
    passed its fraction and the lane's previous fault is over."""

    def __init__(self, cluster: Cluster, lanes: dict[str, list[Fault]], progress: Callable[[], float]):
        self.cluster, self.lanes, self.progress = cluster, lanes, progress
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(faults,), name=f"chaos-{lane}", daemon=True)
                         for lane, faults in lanes.items()]

    def describe(self) -> str:
        return "; ".join(f"{f.what} at {f.at_fraction:.0%}" for faults in self.lanes.values() for f in faults)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, faults: list[Fault]) -> None:
        for fault in faults:
            while self.progress() < fault.at_fraction:
                time.sleep(0.05)
            self.cluster.timeline.note(f"FAULT {fault.what} (at {self.progress():.0%})")
            try:
                fault.action()
            except Exception as exc:  # noqa: BLE001 - recorded; the test fails on it
                self.errors.append(f"{fault.what}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                self.cluster.timeline.note(f"fault {fault.what} failed: {str(exc).splitlines()[0]}")

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [t.name for t in self._threads if t.is_alive()]
        assert not late, f"chaos lanes not finished after {timeout_s:.0f}s: {late}"
