"""Layers point one way: library → services → entry points.

``driftline.entry`` (cli, demo, embedded, serve, wiring, report) composes the
services; the services import the library; nothing imports upwards. Read from
the source with ``ast``, so a violation fails here before it becomes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "libs" / "driftline"
SERVICES = ROOT / "services"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(folder: Path, *, skip: Path | None = None) -> list[Path]:
    return [p for p in sorted(folder.rglob("*.py")) if skip is None or skip not in p.parents]


def upward(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if m.startswith(forbidden))


@pytest.mark.parametrize("path", sources(LIBRARY, skip=LIBRARY / "entry"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_imports_neither_services_nor_entry_points(path):
    assert upward(path, ("driftline.entry", "driftline.services")) == []


@pytest.mark.parametrize("path", sources(SERVICES), ids=lambda p: str(p.relative_to(ROOT)))
def test_services_do_not_import_entry_points(path):
    assert upward(path, ("driftline.entry",)) == []


def test_the_check_sees_an_upward_import(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("def f():\n    from driftline.entry.embedded import Embedded\n")
    assert upward(planted, ("driftline.entry",)) == ["driftline.entry.embedded", "driftline.entry.embedded.Embedded"]
