"""Helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The best of ``repeats`` timings: on a shared machine the minimum is the least noisy."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def report(name: str, **values: object) -> dict[str, object]:
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    return {"bench": name, **values}
