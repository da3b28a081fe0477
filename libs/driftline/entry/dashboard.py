"""The live dashboard of ``driftline up``: the report's charts for every model, refreshed while it runs.

The page at ``/`` is a shell that fetches ``/dashboard.json`` every few seconds and
swaps in each model's sections. The sections are the very HTML of ``driftline
report`` (:mod:`driftline.entry.report`: same SQL, same inline SVG charts), so
the dashboard and the report never disagree.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from driftline.entry import report

REFRESH_MS = 3000

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>driftline up</title>
<style>{css}
#status {{ color: #666; font-size: 12.5px; }} .model {{ margin-bottom: 36px; }}</style></head>
<body><main><h1>driftline: live</h1>
<p class="sub">The charts of <code>driftline report</code> for every registered model, refreshed every
{seconds:g} s from the store. Charts are in event time (UTC). <span id="status">loading…</span></p>
<div id="models"><p class="empty">Loading…</p></div>
</main>
<script>
async function refresh() {{
  try {{
    const response = await fetch("dashboard.json", {{cache: "no-store"}});
    const data = await response.json();
    document.getElementById("models").innerHTML = data.html;
    document.getElementById("status").textContent = "updated " + data.generated_at;
  }} catch (error) {{
    document.getElementById("status").textContent = "cannot reach driftline up: " + error;
  }}
}}
refresh();
setInterval(refresh, {refresh_ms});
</script></body></html>
"""


def page(refresh_ms: int = REFRESH_MS) -> str:
    """The dashboard's HTML shell (the charts arrive from :func:`snapshot`)."""
    return _PAGE.format(css=report._CSS, seconds=refresh_ms / 1000, refresh_ms=refresh_ms)


def model_sections(data: report.ReportData) -> str:
    """One model's report sections (summary, PSI, accuracy, coverage, timeline) as HTML."""
    domain = report._x_domain(data)
    sections = [
        ("Summary", report._summary(data)),
        ("PSI per feature over time", report._psi_section(data, domain)),
        ("Accuracy per model version over time", report._accuracy_section(data, domain)),
        ("Label coverage", report._coverage_section(data, domain)),
        ("Model timeline", report._timeline_section(data)),
    ]
    body = "\n".join(f"<section><h2>{html.escape(title)}</h2>\n{content}\n</section>" for title, content in sections)
    return f'<div class="model" id="model-{html.escape(data.model)}"><h1>{html.escape(data.model)}</h1>\n{body}</div>'


def snapshot(store, registry) -> dict[str, Any]:
    """What the page shows now: every model's sections, read from the store and the registry."""
    models = registry.models()
    if models:
        text = "\n".join(model_sections(report.collect(store, registry, model)) for model in models)
    else:
        text = ('<p class="empty">No model registered yet: register one (see README, "Use your own model"), '
                "then send events to POST /v1/events.</p>")
    return {"models": models, "html": text,
            "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
