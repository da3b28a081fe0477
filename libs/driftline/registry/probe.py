"""The sandboxed load check: ``python -m driftline.registry.probe``, fed artifacts on stdin.

The registry starts this program once (under ``unshare -rn`` where that
works, so it has no network at all) and keeps it waiting: it imports
scikit-learn, numpy and skops up front and never touches an artifact itself.
For each artifact it forks a fresh child that

1. lowers its limits (address space, CPU seconds, no file may grow, no core dump),
2. installs an audit hook that refuses sockets, process creation, ``exec``/``eval``
   of code, file writes and other changes to the file system,
3. checks the artifact's types against the same exact allow-list as the registry,
4. loads it and checks the object has ``predict`` (and ``predict_proba`` for a
   classification contract),

then reports one JSON verdict. A child that crashes, overruns its time or
memory, or tries any of the refused operations yields a refusing verdict; the
waiting parent is unaffected and serves the next artifact. Forking from a warm
parent keeps a check to tens of milliseconds instead of the seconds an import
of scikit-learn takes.

Protocol (all on stdin / stdout, one request at a time): the program writes
``ready`` and a newline once warm; each request is one line of JSON
``{"size": n, "task": "classification", "extra_trusted_types": [...],
"timeout_s": 30, "memory_bytes": 2147483648}`` followed by ``n`` bytes of
artifact; each answer is one line of JSON ``{"ok": true}`` or
``{"ok": false, "reason": "..."}``. End of input ends the program.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import select
import signal
import sys
import time
from typing import Any, BinaryIO

import skops.io  # imported here, before any fork, so children start warm

from driftline.registry.artifacts import UntrustedArtifact, check_trusted

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

# Audit events a model load has no business raising. "exec" covers exec() and
# eval() of code objects and the import of a module not loaded before the hook
# (the modules of the artifact's trusted types are imported first).
_REFUSED_EVENTS = frozenset({
    "exec", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "os.kill", "os.killpg", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
    "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "os.putenv", "os.unsetenv",
    "os.chdir", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "pickle.find_class",
    "marshal.loads", "marshal.load", "webbrowser.open", "urllib.Request",
})
_REFUSED_PREFIXES = ("socket.", "shutil.", "ftplib.", "smtplib.", "http.", "imaplib.", "poplib.", "telnetlib.")


class SandboxViolation(RuntimeError):
    """The artifact tried something the load sandbox refuses."""


def _refuse_side_effects(event: str, args: tuple[Any, ...]) -> None:
    if event in _REFUSED_EVENTS or event.startswith(_REFUSED_PREFIXES):
        raise SandboxViolation(f"the load check refuses {event!r}")
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writes or isinstance(path, int):
            raise SandboxViolation(f"the load check refuses to open {path!r} for writing")


def _limit_resources(timeout_s: float, memory_bytes: int) -> None:
    """CPU seconds, address space beyond what the warm parent already maps, no files, no core."""
    with open("/proc/self/statm") as statm:  # pages of virtual memory mapped now
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_bytes, mapped + memory_bytes))
    cpu = max(1, math.ceil(timeout_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _import_modules_of(names: list[str]) -> None:
    """Import the modules of the (already trusted) types, before the hook refuses imports."""
    for name in names:
        module = name.rpartition(".")[0]
        try:
            importlib.import_module(module)
        except Exception:  # the load below reports a missing module with a clear error
            pass


def check_in_this_process(data: bytes, task: str, extra_trusted_types: frozenset[str],
                          timeout_s: float, memory_bytes: int) -> dict[str, Any]:
    """Limit, hook and load; the verdict as a dict. Meant for a throwaway (forked) process."""
    where = "the new artifact"
    try:
        names = check_trusted(data, where, extra_trusted_types)
    except UntrustedArtifact as exc:
        return {"ok": False, "reason": str(exc)}
    _import_modules_of(names)
    sys.dont_write_bytecode = True
    _limit_resources(timeout_s, memory_bytes)
    sys.addaudithook(_refuse_side_effects)
    try:
        model = skops.io.loads(data, trusted=names)  # exactly the names checked above
    except BaseException as exc:  # SandboxViolation, MemoryError, anything the load raised
        return {"ok": False, "reason": f"{where} does not load: {type(exc).__name__}: {exc}"}
    required = ("predict", "predict_proba") if task == "classification" else ("predict",)
    missing = [m for m in required if not callable(getattr(model, m, None))]
    if missing:
        return {"ok": False, "reason": f"{where} loads into a {type(model).__name__}, which has no "
                                       f"{' or '.join(missing)} (a {task} contract needs {', '.join(required)})"}
    return {"ok": True}


def _check_in_child(data: bytes, request: dict[str, Any]) -> dict[str, Any]:
    """Fork, check in the child, collect its verdict within the time limit."""
    timeout_s = float(request["timeout_s"])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        verdict: dict[str, Any] = {"ok": False, "reason": "the load check failed unexpectedly"}
        try:
            os.close(read_end)
            verdict = check_in_this_process(data, request["task"], frozenset(request["extra_trusted_types"]),
                                            timeout_s, int(request["memory_bytes"]))
        except BaseException as exc:
            verdict = {"ok": False, "reason": f"the load check failed: {type(exc).__name__}: {exc}"}
        finally:
            try:
                os.write(write_end, json.dumps(verdict).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    chunks, deadline, timed_out = [], time.monotonic() + timeout_s, False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_end], [], [], remaining)
        if ready:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"ok": False, "reason": f"loading the artifact took longer than {timeout_s:g}s"}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            return {"ok": False, "reason": f"loading the artifact killed the load check ({name}; "
                                           "a memory or CPU limit, or a crash)"}
        return {"ok": False, "reason": "the load check ended without a verdict"}


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Answer requests until end of input."""
    stdout.write(b"ready\n")
    stdout.flush()
    while True:
        header = stdin.readline()
        if not header:
            return 0
        request = json.loads(header)
        data = stdin.read(int(request["size"]))
        verdict = _check_in_child(data, request)
        stdout.write(json.dumps(verdict).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
