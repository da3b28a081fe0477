"""``driftline model ...``: register, list, show, promote, roll back, card (issue 9)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``driftline`` parser (none yet)."""
