"""bench.baseline unpacks a commit so its demo runs with today's virtualenv, and says plainly when
the commit is not there (a shallow clone) instead of failing; bench.memory's growth estimate."""

from __future__ import annotations

from bench.baseline import baseline_checkout
from bench.memory import growth_mb_per_100k


def test_a_commit_is_unpacked_with_links_to_schemas_and_services(tmp_path):
    checkout = baseline_checkout(tmp_path, "HEAD")
    package = checkout.libs / "driftline"
    assert (package / "schemas").resolve() == (tmp_path / "schemas").resolve()
    assert (package / "services" / "ingest" / "gateway.py").is_file()
    assert (package / "schemas" / "FeatureEvent.avsc").is_file()


def test_a_missing_commit_is_a_reason_not_an_error(tmp_path):
    reason = baseline_checkout(tmp_path, "0" * 40)
    assert isinstance(reason, str) and "is not in" in reason and "shallow clone" in reason


def test_growth_is_measured_over_the_second_half_and_only_on_long_runs():
    samples = [(t, 500_000 + 1024 * t) for t in range(0, 101)]  # 1 MB more per second
    assert growth_mb_per_100k(samples, events=1_000_000, wall_s=100) == 10.0  # 10,000 events a second
    assert growth_mb_per_100k(samples, events=50_000, wall_s=100) is None
