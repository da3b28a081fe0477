"""Session fixtures that run a real Kafka broker and a real Apicurio registry.

Both are JVMs fetched from Maven Central on first use (see driftline.testing.kafka)
and started once per test session, each in its own temp dir, and stopped at the end.

When the stack cannot be had (no java, no mvn, a download failed), tests are
skipped with the reason on a developer's machine, but FAIL under ``CI=true``:
a CI run that silently skipped every integration test would look green.

Set ``DRIFTLINE_KAFKA_BOOTSTRAP`` / ``DRIFTLINE_SCHEMA_REGISTRY_URL`` to reuse
servers that are already running (e.g. from ``make kafka-up``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from driftline.testing.kafka import InfraError, Service, start_apicurio, start_kafka


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _bail(reason: str) -> None:
    """Fail under CI (a missing broker must not pass as green), skip elsewhere."""
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _run_service(name: str, start: Callable[..., Service]) -> Iterator[str]:
    """Start one service in a fresh temp dir, yield its address, stop it and clean up."""
    workdir = Path(tempfile.mkdtemp(prefix=f"driftline-{name}-"))
    try:
        service = start(workdir, die_with_parent=True)
    except InfraError as exc:
        reason = f"cannot start local {name}: {exc}"
    else:
        reason = None
    if reason is not None:  # outside the except block: no chained traceback in the report
        if any(workdir.iterdir()):
            reason += f"\n(config and logs kept in {workdir})"
        else:
            workdir.rmdir()
        _bail(reason)
    try:
        yield service.address
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a single-node KRaft Kafka 4 broker (auto topic creation off)."""
    preset = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
    if preset:
        yield preset
        return
    yield from _run_service("kafka", start_kafka)


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT/apis/ccompat/v7``: Apicurio's Confluent-compatible API, in-memory."""
    preset = os.environ.get("DRIFTLINE_SCHEMA_REGISTRY_URL")
    if preset:
        yield preset
        return
    yield from _run_service("apicurio", start_apicurio)
