"""Peak RSS of a 1,000,000-event embedded demo, run in a subprocess of its own.

The child runs ``driftline demo --events N --no-report --json`` in-process and, when it is
done, reads its own peak resident set (``VmHWM`` in ``/proc/self/status``; ``ru_maxrss``
where there is no /proc). The parent samples the child's ``VmRSS`` while it runs, so the
line also says how the resident set grew: the slope per 100,000 events after the first
quarter is what a longer run would add.

It also prints the resident set of a process that has only opened the embedded pipeline,
and which Python ran: the packages of the environment weigh in. ``make bench`` runs in
``.venv-bench``, whose pins for Evidently (pandas < 3) made a 1,000,000-event demo peak at
1,117 MB where the project's ``.venv`` peaked at 923 MB (2026-11-24, one run each).

``BENCH_MEMORY_EVENTS`` shrinks the run (default 1,000,000); the target is < 1 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report

EVENTS = int(os.environ.get("BENCH_MEMORY_EVENTS", "1000000"))
LIMIT_MB = 1024
SAMPLE_S = 1.0

#: Runs the demo, then prints its own peak RSS as the last line.
CHILD = """
import json, resource, sys
from driftline.entry.cli import main
sys.argv = ["driftline", "demo", "--events", sys.argv[1], "--no-report", "--json"]
main()
peak_kb = None
try:
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
print(json.dumps({"peak_rss_kb": peak_kb}), flush=True)
"""


def rss_kb(pid: int) -> int | None:
    """The current resident set of ``pid`` (None once it is gone, or without /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def run_child(events: int, home: Path) -> tuple[dict, list[tuple[float, int]], float]:
    """The demo's summary with ``peak_rss_kb``, the (seconds, RSS kB) samples, and the wall time."""
    env = {**os.environ, "DRIFTLINE_HOME": str(home)}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(events)], stdout=out, stderr=err, env=env)
        samples = []
        while child.poll() is None:
            rss = rss_kb(child.pid)
            if rss is not None:
                samples.append((time.perf_counter() - started, rss))
            try:
                child.wait(SAMPLE_S)
            except subprocess.TimeoutExpired:
                pass
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if child.returncode != 0 or len(lines) < 2:
            raise RuntimeError(f"the {events}-event demo failed ({child.returncode}): {err.read()[-2000:]}")
    summary = json.loads(lines[-2])
    summary.update(json.loads(lines[-1]))
    return summary, samples, time.perf_counter() - started


def growth_mb_per_100k(samples: list[tuple[float, int]], events: int, wall_s: float) -> float | None:
    """RSS growth per 100,000 events over the second half of the run (events taken as evenly
    spread over the wall time: an estimate of what a longer run adds). None for runs under
    100,000 events, where start-up (imports, training v1) dominates the wall time."""
    half = [s for s in samples if s[0] >= wall_s / 2]
    if events < 100_000 or len(half) < 2:
        return None
    (t0, r0), (t1, r1) = half[0], half[-1]
    events_between = events * (t1 - t0) / wall_s
    return round((r1 - r0) / 1024 / max(events_between, 1) * 100_000, 1)


#: Opens the embedded pipeline and prints its resident set before any event (kB).
START_CHILD = """
import json, sys
from driftline.config import Settings
from driftline.entry.embedded import Embedded
app = Embedded(Settings())
with open("/proc/self/status") as status:
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
app.close()
print(json.dumps({"start_rss_kb": rss_kb}))
"""


def start_rss_mb(home: Path) -> int | None:
    """The resident set of a process that has opened the embedded pipeline (None without /proc)."""
    if not Path("/proc/self/status").exists():
        return None
    out = subprocess.run([sys.executable, "-c", START_CHILD], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DRIFTLINE_HOME": str(home)}, check=True).stdout
    return round(json.loads(out.strip().splitlines()[-1])["start_rss_kb"] / 1024)


def run() -> dict:
    with tempfile.TemporaryDirectory() as home:
        summary, samples, wall_s = run_child(EVENTS, Path(home))
    with tempfile.TemporaryDirectory() as home:
        start_mb = start_rss_mb(Path(home))
    peak_mb = summary["peak_rss_kb"] / 1024
    quarters = {f"rss_mb_at_{q}pct": round(next((r for t, r in samples if t >= wall_s * q / 100), samples[-1][1])
                                           / 1024) for q in (25, 50, 75)} if samples else {}
    return report(
        "memory", events=EVENTS, peak_rss_mb=round(peak_mb), limit_mb=LIMIT_MB, under_limit=peak_mb < LIMIT_MB,
        **quarters, growth_mb_per_100k_events=growth_mb_per_100k(samples, EVENTS, wall_s),
        events_per_s=summary["events_per_s"], rss_mb_before_the_first_event=start_mb,
        python=sys.executable,
    )
