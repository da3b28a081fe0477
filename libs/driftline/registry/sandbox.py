"""The registry's side of the sandboxed load check (see :mod:`driftline.registry.probe`).

:class:`LoadProbe` keeps one warm ``python -m driftline.registry.probe``
process, started in the background as soon as the probe is created, and sends
it each artifact a registration wants to accept. The process runs under
``unshare -rn`` (a new user and network namespace: no interface but a
loopback that is down) when the machine allows it; where it does not (some
containers forbid user namespaces) the check still runs, with the audit hook
refusing sockets, and the fallback is logged once.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from functools import cache

from driftline.registry.artifacts import UnloadableArtifact

log = logging.getLogger(__name__)

# One thread per library (OpenBLAS, OpenMP, MKL) so the warm process holds no
# threads when it forks a child per artifact.
_SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class ProbeUnavailable(RuntimeError):
    """The load check itself could not run (it did not start or it died); nothing is registered."""


@cache
def network_isolation_prefix() -> tuple[str, ...]:
    """``("unshare", "-rn")`` if a child can be put in its own network namespace here, else ``()``."""
    unshare = shutil.which("unshare")
    if unshare is None:
        log.warning("registry load check: no unshare(1); the check runs without a network namespace")
        return ()
    try:
        works = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        log.warning("registry load check: `unshare -rn` is not permitted here (user namespaces disabled?); "
                    "the check runs without a network namespace, its audit hook still refuses sockets")
        return ()
    return (unshare, "-rn")


class LoadProbe:
    """Check that an artifact loads into a model, in a sandboxed child process.

    Parameters
    ----------
    timeout_s
        Wall-clock (and CPU) seconds one artifact may take to load.
    memory_bytes
        Address space one load may add to the warm process it is forked from.
    startup_timeout_s
        How long a registration waits for the warm process to import scikit-learn.
    isolate_network
        Run the process under ``unshare -rn`` where that works.
    """

    def __init__(self, timeout_s: float = 30.0, memory_bytes: int = 2 << 30, startup_timeout_s: float = 180.0,
                 isolate_network: bool = True):
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.startup_timeout_s = startup_timeout_s
        self.isolate_network = isolate_network
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._ready = False
        with self._lock:
            self._start()

    def check(self, artifact: bytes, task: str, extra_trusted_types: Collection[str] = (),
              where: str = "the artifact") -> None:
        """Return if ``artifact`` loads into a model fit for ``task``; else raise.

        Raises
        ------
        UnloadableArtifact
            The artifact does not load, or loads into an object without ``predict``
            (or ``predict_proba`` when ``task`` is ``"classification"``).
        ProbeUnavailable
            The sandboxed process could not be started or died.
        """
        request = {"size": len(artifact), "task": task, "extra_trusted_types": sorted(extra_trusted_types),
                   "timeout_s": self.timeout_s, "memory_bytes": self.memory_bytes}
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            try:
                self._wait_ready()
                self._process.stdin.write(json.dumps(request).encode() + b"\n" + artifact)
                self._process.stdin.flush()
                # The probe enforces timeout_s on the load itself; the margin covers the fork and the answer.
                verdict = json.loads(self._read_line(self.timeout_s + 30.0))
            except (OSError, ValueError, ProbeUnavailable) as exc:
                self._stop()
                raise ProbeUnavailable(f"the sandboxed load check failed: {exc}") from exc
        if not verdict.get("ok"):
            raise UnloadableArtifact(f"refusing {where}: {verdict.get('reason', 'the load check refused it')}")

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the warm process -----------------------------------------------------------------

    def _start(self) -> None:
        prefix = network_isolation_prefix() if self.isolate_network else ()
        command = [*prefix, sys.executable, "-B", "-m", "driftline.registry.probe"]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            env={**os.environ, **_SINGLE_THREADED}, start_new_session=True)
        self._ready = False

    def _wait_ready(self) -> None:
        if not self._ready:
            line = self._read_line(self.startup_timeout_s)
            if line != b"ready":
                raise ProbeUnavailable(f"the load check did not start (it said {line[:200]!r})")
            self._ready = True

    def _read_line(self, timeout_s: float) -> bytes:
        """One line from the process, or :class:`ProbeUnavailable` after ``timeout_s`` or at its exit."""
        stdout, line = self._process.stdout, bytearray()
        deadline = time.monotonic() + timeout_s
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProbeUnavailable(f"no answer from the load check within {timeout_s:g}s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                byte = stdout.read(1)
                if not byte:
                    raise ProbeUnavailable(f"the load check exited (code {self._process.wait()})")
                line += byte
        return bytes(line[:-1])

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # end of input: the probe exits on its own
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


_shared: LoadProbe | None = None
_shared_lock = threading.Lock()


def shared_load_probe() -> LoadProbe:
    """One warm probe per process for registries that are not given their own.

    Tests and the embedded mode open many registries; each one starting its
    own process would import scikit-learn again every time.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LoadProbe()
        return _shared
