"""The demo's events/s at a baseline commit and now, each in a subprocess of its own, in one run.

Issue 12 asks for the demo's events/s "at least 3x that of commit 58e215e measured on
the same machine in the same run". The baseline's code is taken with ``git archive``
into a scratch folder and run with the current virtualenv (its dependencies are a
subset of today's): ``libs/driftline`` gets links to the checkout's ``schemas`` and
``services`` (as an installed package would have them), and ``PYTHONPATH`` points at
its ``libs``. Both demos run ``driftline demo --events N --no-report --json`` with a
DRIFTLINE_HOME of their own, alternately when repeated, and the best of each is kept
(the least disturbed by a shared machine).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASELINE_COMMIT = "58e215e"
REPO = Path(__file__).resolve().parent.parent

#: The demo through a checkout's CLI module (argv: the module, the events), printing its JSON summary.
DEMO = """
import importlib, sys
main = importlib.import_module(sys.argv[1]).main
sys.argv = ["driftline", "demo", "--events", sys.argv[2], "--no-report", "--json"]
main()
"""


@dataclass(frozen=True)
class Checkout:
    """Code to run the demo from: ``libs`` goes first on PYTHONPATH (None: the installed driftline),
    and the module of its CLI (the baseline's predates the ``driftline.entry`` package)."""

    name: str
    libs: Path | None
    cli: str = "driftline.entry.cli"


def baseline_checkout(scratch: Path, commit: str = BASELINE_COMMIT) -> Checkout | str:
    """``commit`` unpacked into ``scratch``, ready to run; or why it cannot be (a shallow clone...)."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git is not available here ({exc})"
    if archive.returncode != 0:
        return (f"commit {commit} is not in {REPO} (a shallow clone? `git fetch --unshallow`): "
                f"{archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch, filter="data")
    package = scratch / "libs" / "driftline"
    for name in ("schemas", "services"):
        link = package / name
        if not link.exists():
            link.symlink_to(Path("..", "..", name))
    return Checkout(commit, scratch / "libs", "driftline.cli")


def demo_events_per_s(checkout: Checkout, events: int) -> float:
    """One ``driftline demo --events N`` of ``checkout`` in a subprocess with an empty home."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DRIFTLINE_HOME": home}
        if checkout.libs is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(checkout.libs), *filter(None, [env.get("PYTHONPATH")])])
        done = subprocess.run([sys.executable, "-c", DEMO, checkout.cli, str(events)], capture_output=True, text=True, env=env,
                              cwd=home)
    if done.returncode != 0:
        raise RuntimeError(f"the {checkout.name} demo failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["events_per_s"])


def now_vs_baseline(events: int, repeats: int = 1) -> dict[str, object]:
    """``demo_events_per_s`` now and at the baseline, alternating, best of ``repeats`` each; the
    ratio, or ``baseline_skipped`` with the reason when the baseline cannot be checked out."""
    now = Checkout("now", None)
    with tempfile.TemporaryDirectory() as scratch:
        baseline = baseline_checkout(Path(scratch))
        if isinstance(baseline, str):
            best_now = max(demo_events_per_s(now, events) for _ in range(repeats))
            return {"demo_events_per_s": round(best_now), "baseline_skipped": baseline}
        rates: dict[str, list[float]] = {"now": [], "baseline": []}
        for attempt in range(repeats):
            order = (baseline, now) if attempt % 2 == 0 else (now, baseline)
            for checkout in order:
                rates["now" if checkout is now else "baseline"].append(demo_events_per_s(checkout, events))
    best_now, best_baseline = max(rates["now"]), max(rates["baseline"])
    return {"demo_events_per_s": round(best_now), f"demo_events_per_s_at_{BASELINE_COMMIT}": round(best_baseline),
            "demo_ratio_vs_baseline": round(best_now / best_baseline, 2)}
