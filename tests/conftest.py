"""Fixtures shared by every test: an isolated DRIFTLINE_HOME and a store inside it."""

from __future__ import annotations

import pytest

from driftline.config import Settings
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
