"""Fixtures shared by every test: an isolated DRIFTLINE_HOME, a store inside it, a registry.

Under ``CI=true`` a skipped test fails: CI must run everything (a skip that
passes as green would hide a missing part).
"""

from __future__ import annotations

import os

import pytest

from driftline.config import Settings
from driftline.registry import Registry
from driftline.store import Store


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    return Settings()


@pytest.fixture
def store(settings):
    # chDB holds one path per process at a time: every test closes its store.
    s = Store(settings.resolved_store_dsn)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def registry(tmp_path):
    """A local registry in its own folder (sharing the process's one warm load check)."""
    r = Registry(tmp_path / "registry")
    yield r
    r.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true, which must run everything: {reason}"
