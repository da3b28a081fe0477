"""The chaos schedule is a pure function of its seed: a failing run can be replayed exactly."""

from __future__ import annotations

import random

from driftline.testing.chaos import RUNNERS, ChaosMonkey, chaos_schedule


class _NoCluster:
    """chaos_schedule only closes over the cluster's methods; building a schedule calls none of them."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _plan(seed: int) -> list[tuple[str, str, float]]:
    lanes = chaos_schedule(_NoCluster(), random.Random(seed))
    return [(lane, f.what, f.at_fraction) for lane, faults in lanes.items() for f in faults]


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)


def test_three_kills_of_each_runner_and_each_infrastructure_fault_once() -> None:
    lanes = chaos_schedule(_NoCluster(), random.Random(1))
    for name in RUNNERS:
        assert [f.what for f in lanes[name]] == [f"kill -9 {name}"] * 3
        fractions = [f.at_fraction for f in lanes[name]]
        assert fractions == sorted(fractions) and all(0.0 < f < 1.0 for f in fractions)
    assert sorted(f.what for f in lanes["infrastructure"]) == ["broker restart", "registry down 30s",
                                                              "store endpoint restart"]


def test_the_monkey_fires_a_lane_in_order_once_progress_passes() -> None:
    fired: list[str] = []
    from driftline.testing.chaos import Fault, Timeline

    class Recorder:
        timeline = Timeline()

    lanes = {"a": [Fault(0.2, "first", lambda: fired.append("first")), Fault(0.5, "second", lambda: fired.append("second"))]}
    progress = iter([0.0, 0.1, 0.3, 0.3, 0.6, 1.0] + [1.0] * 100)
    monkey = ChaosMonkey(Recorder(), lanes, lambda: next(progress))
    monkey.start()
    monkey.join(10)
    assert fired == ["first", "second"] and monkey.errors == []
