"""A model card (markdown) for one version, generated from its lineage and metrics."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from driftline.registry.core import ModelVersion


def model_card(version: ModelVersion, aliases: dict[str, int], audit: list[dict]) -> str:
    created = datetime.fromtimestamp(version.created_at / 1000, tz=timezone.utc).isoformat(timespec="seconds")
    holds = sorted(alias for alias, v in aliases.items() if v == version.version) or ["none"]
    lines = [
        f"# {version.model} v{version.version}",
        "",
        f"- **sha256**: `{version.sha256}`",
        f"- **created**: {created} by {version.created_by}",
        f"- **aliases now**: {', '.join(holds)}",
        f"- **task**: {version.contract.task}, classes {', '.join(version.contract.classes)}",
        f"- **features**: numeric {', '.join(version.contract.numeric)}; categorical {', '.join(version.contract.categorical) or '-'}",
        "",
        "## Recipe",
        "",
        f"```json\n{json.dumps(version.recipe, indent=2, sort_keys=True)}\n```",
        "",
        "## Metrics",
        "",
    ]
    lines += _table(version.metrics) if version.metrics else ["(none recorded)"]
    lines += ["", "## Lineage", ""]
    lines += _table(version.lineage) if version.lineage else ["(none recorded)"]
    lines += ["", "## History", "", "| when | who | what | why |", "| --- | --- | --- | --- |"]
    for event in audit:
        if event["version"] == version.version or event.get("previous_version") == version.version:
            when = datetime.fromtimestamp(event["at"] / 1000, tz=timezone.utc).isoformat(timespec="seconds")
            what = event["action"] + (f" {event['alias']}" if event.get("alias") else "")
            lines.append(f"| {when} | {event['actor']} | {what} | {event['reason']} |")
    return "\n".join(lines) + "\n"


def _table(values: dict) -> list[str]:
    rows = ["| key | value |", "| --- | --- |"]
    for key, value in sorted(values.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        cell = str(text).replace("|", "\\|")
        rows.append(f"| {key} | {cell} |")
    return rows
