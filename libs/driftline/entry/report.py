"""``driftline report``: one self-contained HTML page on a model's health, or on every model's.

With ``--model`` the page is on that model; without it, one page holds a part
per registered model (a table of contents, then the same sections for each).

Everything comes from the store (predictions, labels, drift_metrics,
dead_letters) and the registry (versions, aliases, audit log). The page has no
scripts and loads nothing: the charts are inline SVG drawn here.

Charts share one x axis in **event time** (the ``event_time`` of the records,
epoch ms, UTC). The registry's audit log is in wall-clock time, so a promotion
is placed on the charts at the event time of the first event the new champion
scored, not at the wall-clock instant of the alias move.
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from driftline import __version__

#: One colour per feature in the PSI chart (sorted feature names, model score last).
PSI_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
               "#e377c2", "#637939", "#bcbd22", "#17becf", "#393b79", "#e7ba52")
#: One colour per model version in the accuracy chart, distinct from the PSI colours.
VERSION_COLOURS = ("#00796b", "#c2185b", "#3949ab", "#ef6c00", "#6d4c41", "#558b2f")
COVERAGE_COLOUR = "#0277bd"
MARKER_COLOUR = "#6a1b9a"
WARN_COLOUR, ALERT_COLOUR = "#f9a825", "#e53935"
PSI_WARN, PSI_ALERT = 0.10, 0.25
ACCURACY_BUCKETS = 50

SCORE_FEATURE = "__score__"  # the model's output, profiled beside the inputs

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: #222;
       background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 6px; padding-bottom: 4px; border-bottom: 1px solid #e3e3e3; }
h3 { font-size: 16px; margin: 22px 0 6px; }
article { margin-top: 36px; }
.sub { color: #666; margin: 0 0 8px; }
.note { color: #666; font-size: 12.5px; margin: 4px 0; }
.empty { color: #777; font-style: italic; padding: 14px; background: #f6f6f6; border-radius: 6px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 10px 0 14px; }
.card { border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px 14px; min-width: 130px; }
.card .k { color: #666; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #fafafa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.when, .badge { white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 12px; background: #eceff1; }
.badge.alias_moved { background: #e8eaf6; } .badge.rolled_back { background: #fff3e0; }
.badge.rejected { background: #ffebee; } .badge.registered { background: #e8f5e9; }
svg { display: block; margin: 6px 0; }
svg text { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _utc(ms: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(fmt)


def _fmt_int(n: int | None) -> str:
    return "" if n is None else f"{int(n):,}"


def _fmt_acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- data --------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    colour: str
    segments: list[list[tuple[float, float]]]
    dots: bool = False


@dataclass
class Marker:
    x: float
    label: str


@dataclass
class ReportData:
    model: str
    champion: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    versions: list[Any] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    events_scored: int = 0
    labels_by_status: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    live: dict[int, dict[str, Any]] = field(default_factory=dict)  # version -> predictions, labels, accuracy, span
    psi: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # feature -> [(window_end, psi)]
    accuracy: dict[int, list[tuple[int, float, int]]] = field(default_factory=dict)  # version -> [(bucket, acc, n)]
    accuracy_bucket: tuple[int, int] | None = None  # (t0, width) of the accuracy buckets, ms
    coverage: list[tuple[int, float, int]] = field(default_factory=list)  # (window_start, coverage, n)
    promotions: list[dict[str, Any]] = field(default_factory=list)  # audit rows that changed the champion, + x


def _rows(store, sql: str, params: dict[str, Any]) -> list[tuple]:
    return list(store.query(sql, params)[1])


def collect(store, registry, model: str) -> ReportData:
    """Read everything the report shows."""
    p = {"m": model}
    data = ReportData(model)
    data.aliases = dict(registry.aliases(model))
    data.champion = data.aliases.get("champion")
    data.versions = list(registry.versions(model))
    data.audit = list(registry.audit_log(model))

    data.events_scored = int(store.scalar(
        "SELECT count() FROM predictions FINAL WHERE model = {m:String} AND role = 'champion'", p))
    data.labels_by_status = {str(s): int(n) for s, n in _rows(
        store, "SELECT status, count() FROM labels FINAL WHERE model = {m:String} GROUP BY status", p)}
    data.dead_letters = int(store.scalar("SELECT count() FROM dead_letters FINAL"))

    for v, n, first, last in _rows(store, (
            "SELECT model_version, count(), toUnixTimestamp64Milli(min(event_time)), "
            "toUnixTimestamp64Milli(max(event_time)) FROM predictions FINAL "
            "WHERE model = {m:String} AND role = 'champion' GROUP BY model_version"), p):
        data.live.setdefault(int(v), {}).update(predictions=int(n), first=int(first), last=int(last))
    for v, n, acc in _rows(store, (
            "SELECT model_version, count(error), 1 - avg(error) FROM labels FINAL "
            "WHERE model = {m:String} AND status = 'joined' GROUP BY model_version"), p):
        data.live.setdefault(int(v), {}).update(labels=int(n), accuracy=_finite(acc) if n else None)

    # PSI per (feature, window): a window that straddles a promotion has one row per version;
    # the row that saw the most events of the window stands for it.
    psi: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for feature, end, value in _rows(store, (
            "SELECT feature, window_end, argMax(value, n) FROM drift_metrics FINAL "
            "WHERE model = {m:String} AND kind = 'data' AND statistic = 'psi' "
            "GROUP BY feature, window_end ORDER BY feature, window_end"), p):
        value = _finite(value)
        if value is not None:
            psi[str(feature)].append((int(end), value))
    data.psi = dict(psi)

    # Accuracy of each version over event time, in ACCURACY_BUCKETS equal buckets.
    joined = "model = {m:String} AND status = 'joined' AND event_time IS NOT NULL AND error IS NOT NULL"
    (count, t0, t1), = _rows(store, (
        "SELECT count(), toUnixTimestamp64Milli(min(assumeNotNull(event_time))), "
        f"toUnixTimestamp64Milli(max(assumeNotNull(event_time))) FROM labels FINAL WHERE {joined}"), p)
    if count:
        width = max(1, math.ceil((int(t1) - int(t0) + 1) / ACCURACY_BUCKETS))
        data.accuracy_bucket = (int(t0), width)
        accuracy: dict[int, list[tuple[int, float, int]]] = defaultdict(list)
        for v, bucket, n, acc in _rows(store, (
                "SELECT model_version, intDiv(toUnixTimestamp64Milli(assumeNotNull(event_time)) - {t0:Int64}, "
                "{w:Int64}) AS bucket, count(), 1 - avg(error) FROM labels FINAL "
                f"WHERE {joined} GROUP BY model_version, bucket ORDER BY model_version, bucket"),
                {**p, "t0": int(t0), "w": width}):
            acc = _finite(acc)
            if acc is not None:
                accuracy[int(v)].append((int(bucket), acc, int(n)))
        data.accuracy = dict(accuracy)

    # Label coverage per window; a window scored by two versions has one row each: weight by events.
    for start, value, n in _rows(store, (
            "SELECT window_start, if(sum(n) = 0, avg(value), sum(value * n) / sum(n)), sum(n) "
            "FROM drift_metrics FINAL WHERE model = {m:String} AND kind = 'coverage' "
            "AND statistic = 'coverage' GROUP BY window_start ORDER BY window_start"), p):
        value = _finite(value)
        if value is not None:
            data.coverage.append((int(start), value, int(n)))

    data.promotions = _promotions(store, model, data.audit)
    return data


def _promotions(store, model: str, audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit rows that made a version champion, each with the event time it starts at on the charts.

    The audit's ``at`` is wall-clock ms and the charts are in event time: a promotion
    is drawn at the earliest event time the promoted version scored as champion
    after the move (``prediction_time`` is wall clock too, so the two can be compared).
    Without such predictions (clocks skewed between hosts) it falls back to the
    version's first champion prediction at all; with none, it has no marker.
    """
    out = []
    for row in audit:
        if row.get("alias") != "champion" or row.get("action") not in ("alias_moved", "rolled_back"):
            continue
        base = ("SELECT count(), toUnixTimestamp64Milli(min(event_time)) FROM predictions FINAL "
                "WHERE model = {m:String} AND role = 'champion' AND model_version = {v:UInt32}")
        params = {"m": model, "v": int(row["version"]), "at": int(row["at"])}
        (n, first), = _rows(store, base + " AND toUnixTimestamp64Milli(prediction_time) >= {at:Int64}", params)
        if not n and row["action"] == "alias_moved":
            (n, first), = _rows(store, base, params)
        out.append({**row, "event_time": int(first) if n else None})
    return out


# -- SVG ---------------------------------------------------------------------------------


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


_SECOND, _MINUTE, _HOUR, _DAY = 1000, 60_000, 3_600_000, 86_400_000
_TIME_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, _SECOND, 2 * _SECOND, 5 * _SECOND, 10 * _SECOND,
               15 * _SECOND, 30 * _SECOND, _MINUTE, 2 * _MINUTE, 5 * _MINUTE, 10 * _MINUTE, 15 * _MINUTE,
               30 * _MINUTE, _HOUR, 2 * _HOUR, 3 * _HOUR, 6 * _HOUR, 12 * _HOUR, _DAY, 2 * _DAY, 7 * _DAY,
               14 * _DAY, 30 * _DAY, 91 * _DAY, 365 * _DAY)


def _time_ticks(lo: int, hi: int, target: int = 7) -> tuple[list[int], str]:
    """Tick positions (epoch ms, on round UTC times) and the strftime format for their labels."""
    span = max(hi - lo, 1)
    step = next((s for s in _TIME_STEPS if span / s <= target), _TIME_STEPS[-1])
    ticks = list(range(math.ceil(lo / step) * step, hi + 1, step))
    if step < _SECOND:
        fmt = "%H:%M:%S.%f"
    elif step < _MINUTE:
        fmt = "%H:%M:%S"
    elif step < _DAY:
        fmt = "%H:%M" if span < _DAY else "%m-%d %H:%M"
    else:
        fmt = "%Y-%m-%d"
    return ticks, fmt


def _time_label(ms: int, fmt: str) -> str:
    text = _utc(ms, fmt)
    return text[:-3] if fmt.endswith("%f") else text


@dataclass
class Frame:
    """Where a chart draws: pixel box and data domain."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 1040
    height: int = 330
    left: int = 70
    right: int = 230  # room for the legend
    top: int = 30
    bottom: int = 50

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1
        return self.left + (x - self.x0) / span * self.plot_w

    def py(self, y: float) -> float:
        span = self.y1 - self.y0 or 1
        return self.top + self.plot_h - (y - self.y0) / span * self.plot_h


def line_chart(
    frame: Frame,
    series: list[Series],
    *,
    title: str,
    y_label: str,
    y_format: str = "{:.2f}",
    hlines: list[tuple[float, str, str]] = (),
    markers: list[Marker] = (),
) -> str:
    """An inline SVG line chart over event time: axes, ticks, grid, legend, dashed lines and markers."""
    f = frame
    out = [f'<svg width="{f.width}" height="{f.height}" '
           f'viewBox="0 0 {f.width} {f.height}" role="img" aria-label="{_e(title)}">',
           f'<rect x="{f.left}" y="{f.top}" width="{f.plot_w:.1f}" height="{f.plot_h:.1f}" fill="#fcfcfc" '
           'stroke="#ddd"/>']
    # y grid and ticks
    for t in _nice_ticks(f.y0, f.y1):
        y = f.py(t)
        out.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.left + f.plot_w:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<line x1="{f.left - 5}" y1="{y:.1f}" x2="{f.left}" y2="{y:.1f}" stroke="#555"/>')
        out.append(f'<text x="{f.left - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#444">'
                   f'{_e(y_format.format(t))}</text>')
    # x ticks (event time, UTC)
    ticks, fmt = _time_ticks(int(f.x0), int(f.x1))
    base_y = f.top + f.plot_h
    for t in ticks:
        x = f.px(t)
        out.append(f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{base_y:.1f}" stroke="#f0f0f0"/>')
        out.append(f'<line x1="{x:.1f}" y1="{base_y:.1f}" x2="{x:.1f}" y2="{base_y + 5:.1f}" stroke="#555"/>')
        out.append(f'<text x="{x:.1f}" y="{base_y + 18:.1f}" font-size="11" text-anchor="middle" fill="#444">'
                   f'{_e(_time_label(t, fmt))}</text>')
    day = _utc(ticks[0] if ticks else int(f.x0), "%Y-%m-%d")
    same_day = bool(ticks) and {_utc(t, "%Y-%m-%d") for t in ticks} == {day}
    x_title = f"event time (UTC{', ' + day if same_day else ''})"
    out.append(f'<text x="{f.left + f.plot_w / 2:.1f}" y="{f.height - 8}" font-size="12" text-anchor="middle" '
               f'fill="#333">{_e(x_title)}</text>')
    out.append(f'<text transform="translate(16 {f.top + f.plot_h / 2:.1f}) rotate(-90)" font-size="12" '
               f'text-anchor="middle" fill="#333">{_e(y_label)}</text>')
    # axes
    out.append(f'<line x1="{f.left}" y1="{base_y:.1f}" x2="{f.left + f.plot_w:.1f}" y2="{base_y:.1f}" stroke="#555"/>')
    out.append(f'<line x1="{f.left}" y1="{f.top}" x2="{f.left}" y2="{base_y:.1f}" stroke="#555"/>')
    # horizontal reference lines
    for value, colour, label in hlines:
        if f.y0 <= value <= f.y1:
            y = f.py(value)
            out.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.left + f.plot_w:.1f}" y2="{y:.1f}" '
                       f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/>')
            out.append(f'<text x="{f.left + f.plot_w - 4:.1f}" y="{y - 4:.1f}" font-size="10.5" '
                       f'text-anchor="end" fill="{colour}">{_e(label)}</text>')
    # promotion markers
    for i, m in enumerate(markers):
        x = f.px(m.x)
        out.append(f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{base_y:.1f}" stroke="{MARKER_COLOUR}" '
                   'stroke-width="1.5" stroke-dasharray="3 3"/>')
        anchor = "start" if x < f.left + f.plot_w - 90 else "end"
        dx = 4 if anchor == "start" else -4
        out.append(f'<text x="{x + dx:.1f}" y="{f.top + 12 + 13 * (i % 3):.1f}" font-size="11" '
                   f'text-anchor="{anchor}" fill="{MARKER_COLOUR}" font-weight="600">{_e(m.label)}</text>')
    # series, clipped to the plot box
    clip = "clip-" + re.sub(r"[^a-z0-9]+", "-", title.lower())
    out.append(f'<clipPath id="{clip}"><rect x="{f.left}" y="{f.top - 4}" width="{f.plot_w:.1f}" '
               f'height="{f.plot_h + 8:.1f}"/></clipPath><g clip-path="url(#{clip})">')
    for s in series:
        for segment in s.segments:
            points = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in segment)
            if len(segment) > 1:
                out.append(f'<polyline points="{points}" fill="none" stroke="{s.colour}" stroke-width="2.5" '
                           'stroke-linejoin="round" stroke-linecap="round"/>')
            if s.dots or len(segment) == 1:
                out.extend(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3.5" fill="{s.colour}"/>'
                           for x, y in segment)
    out.append("</g>")
    # legend
    lx, ly = f.left + f.plot_w + 18, f.top + 6
    entries = [(s.colour, s.label, "") for s in series]
    entries += [(colour, label, "6 4") for _, colour, label in hlines]
    if markers:
        entries.append((MARKER_COLOUR, "promotion to champion", "3 3"))
    for i, (colour, label, dash) in enumerate(entries):
        y = ly + 17 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{y:.1f}" x2="{lx + 22}" y2="{y:.1f}" stroke="{colour}" '
                   f'stroke-width="{1.5 if dash else 3}"{dash_attr}/>')
        out.append(f'<text x="{lx + 28}" y="{y + 4:.1f}" font-size="11.5" fill="#333">{_e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# -- page --------------------------------------------------------------------------------


def _empty(text: str = "No data yet.") -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _feature_label(feature: str) -> str:
    return "model score" if feature == SCORE_FEATURE else feature


def _feature_order(features) -> list[str]:
    return sorted(features, key=lambda f: (f == SCORE_FEATURE, f))


def _version_colour(version: int) -> str:
    return VERSION_COLOURS[(version - 1) % len(VERSION_COLOURS)]


def _x_domain(data: ReportData) -> tuple[int, int] | None:
    xs = [x for points in data.psi.values() for x, _ in points]
    xs += [start for start, _, _ in data.coverage]
    if data.accuracy_bucket:
        t0, width = data.accuracy_bucket
        xs += [t0 + (b + 0.5) * width for points in data.accuracy.values() for b, _, _ in points]
    xs += [p["event_time"] for p in data.promotions if p["event_time"] is not None]
    xs += [v[k] for v in data.live.values() for k in ("first", "last") if k in v]
    if not xs:
        return None
    lo, hi = int(min(xs)), int(max(xs))
    if hi == lo:
        lo, hi = lo - _MINUTE, hi + _MINUTE
    pad = (hi - lo) * 0.01
    return int(lo - pad), int(hi + pad)


def _markers(data: ReportData) -> list[Marker]:
    return [Marker(p["event_time"], f"v{p['version']}" + (" (rollback)" if p["action"] == "rolled_back" else ""))
            for p in data.promotions if p["event_time"] is not None]


def _summary(data: ReportData) -> str:
    joined = data.labels_by_status.get("joined", 0)
    labelled = sum(v.get("labels", 0) for v in data.live.values())
    correct = sum(v["accuracy"] * v["labels"] for v in data.live.values() if v.get("accuracy") is not None)
    cards = [
        ("champion", "–" if data.champion is None else f"v{data.champion}"),
        ("versions", str(len(data.versions))),
        ("events scored", _fmt_int(data.events_scored)),
        ("labels joined", _fmt_int(joined)),
        ("live accuracy", _fmt_acc(correct / labelled if labelled else None)),
        ("dead letters", _fmt_int(data.dead_letters)),
    ]
    out = ['<div class="cards">']
    out += [f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>' for k, v in cards]
    out.append("</div>")
    pending = {s: n for s, n in sorted(data.labels_by_status.items()) if s != "joined"}
    if pending:
        out.append('<p class="note">Labels not joined: '
                   + _e(", ".join(f"{s} {n:,}" for s, n in pending.items())) + "</p>")

    by_version: dict[int, list[str]] = defaultdict(list)
    for alias, version in sorted(data.aliases.items()):
        by_version[version].append(alias)
    versions = sorted({v.version for v in data.versions} | set(data.live))
    if not versions:
        out.append(_empty("No model versions registered and no predictions yet."))
        return "\n".join(out)
    meta = {v.version: v for v in data.versions}
    out.append('<table><tr><th>version</th><th>aliases</th><th>registered (UTC)</th><th>by</th>'
               '<th class="num">offline accuracy</th><th class="num">events scored</th>'
               '<th class="num">labels joined</th><th class="num">live accuracy</th>'
               '<th>served (event time, UTC)</th></tr>')
    for version in versions:
        m, live = meta.get(version), data.live.get(version, {})
        metrics = (m.metrics or {}) if m else {}
        trained = metrics.get("accuracy", metrics.get("holdout_accuracy"))  # training data, or the retrainer's holdout
        served = f"{_utc(live['first'])} → {_utc(live['last'])}" if "first" in live else ""
        out.append(
            f'<tr><td><span class="swatch" style="background:{_version_colour(version)}"></span>v{version}</td>'
            f'<td>{_e(", ".join(by_version.get(version, [])))}</td>'
            f'<td class="when">{_e(_utc(m.created_at) if m else "")}</td><td>{_e(m.created_by if m else "")}</td>'
            f'<td class="num">{_e(_fmt_acc(_finite(trained)))}</td>'
            f'<td class="num">{_e(_fmt_int(live.get("predictions", 0)))}</td>'
            f'<td class="num">{_e(_fmt_int(live.get("labels", 0)))}</td>'
            f'<td class="num">{_e(_fmt_acc(live.get("accuracy")))}</td><td>{_e(served)}</td></tr>')
    out.append("</table>")
    out.append('<p class="note">Offline accuracy: on the training data, or on the retrainer\'s holdout for a '
               'retrained version. Live accuracy: 1 − mean error of the labels joined to its predictions.</p>')
    return "\n".join(out)


def _psi_section(data: ReportData, domain: tuple[int, int] | None) -> str:
    if not data.psi or domain is None:
        return _empty("No data drift windows closed yet (drift_metrics has no PSI rows for this model).")
    series = []
    for i, feature in enumerate(_feature_order(data.psi)):
        points = data.psi[feature]
        worst = max(v for _, v in points)
        series.append(Series(f"{_feature_label(feature)} (max {worst:.2f})", PSI_COLOURS[i % len(PSI_COLOURS)],
                             [points], dots=True))
    top = max(max(v for _, v in points) for points in data.psi.values())
    frame = Frame(*domain, 0.0, max(top, PSI_ALERT * 1.2) * 1.06)
    frame.height = max(frame.height, frame.top + 17 * (len(series) + 4) + frame.bottom)
    chart = line_chart(frame, series, title="PSI per feature", y_label="PSI", markers=_markers(data),
                       hlines=[(PSI_WARN, WARN_COLOUR, "PSI 0.10: watch"),
                               (PSI_ALERT, ALERT_COLOUR, "PSI 0.25: drift")])
    return chart + ('<p class="note">Each point is one closed window of the data-drift detector, drawn at its end. '
                    'A window scored by two versions is shown with the version that saw most of its events.</p>')


def _accuracy_section(data: ReportData, domain: tuple[int, int] | None) -> str:
    if not data.accuracy or domain is None or data.accuracy_bucket is None:
        return _empty("No labels joined to predictions yet.")
    t0, width = data.accuracy_bucket
    series, lowest = [], 1.0
    for version in sorted(data.accuracy):
        segments: list[list[tuple[float, float]]] = []
        previous = None
        for bucket, acc, _ in data.accuracy[version]:
            if previous is None or bucket != previous + 1:
                segments.append([])  # a gap in the labels: break the line
            segments[-1].append((t0 + (bucket + 0.5) * width, acc))
            previous = bucket
            lowest = min(lowest, acc)
        live = data.live.get(version, {})
        series.append(Series(f"v{version} ({_fmt_acc(live.get('accuracy'))} on {_fmt_int(live.get('labels', 0))})",
                             _version_colour(version), segments))
    y0 = max(0.0, math.floor((lowest - 0.05) * 10) / 10)
    chart = line_chart(Frame(*domain, y0, 1.0), series, title="Accuracy per model version", y_label="accuracy",
                       markers=_markers(data))
    return chart + (f'<p class="note">1 − mean error of joined labels in {ACCURACY_BUCKETS} equal event-time buckets '
                    f'of {width / 1000:,.1f} s, one line per version that made the predictions.</p>')


def _coverage_section(data: ReportData, domain: tuple[int, int] | None) -> str:
    if not data.coverage or domain is None:
        return _empty("No label coverage computed yet.")
    series = [Series("labelled share of events", COVERAGE_COLOUR, [[(s, v) for s, v, _ in data.coverage]], dots=True)]
    frame = Frame(*domain, 0.0, 1.0)
    frame.height = 280
    chart = line_chart(frame, series, title="Label coverage", y_label="coverage", y_format="{:.0%}",
                       markers=_markers(data))
    return chart + ('<p class="note">Share of a window\'s events with a label, drawn at the window start; '
                    'recent windows fill up as late labels arrive.</p>')


def _timeline_section(data: ReportData) -> str:
    if not data.audit:
        return _empty("The registry has no events for this model yet.")
    at_event = {p["id"]: p["event_time"] for p in data.promotions}
    out = ['<p class="note">Times are wall clock (UTC) when the registry recorded the change. On the charts, a '
           'promotion is drawn at the event time of the first event the new champion scored.</p>',
           '<table><tr><th>when (UTC)</th><th>action</th><th>version</th><th>alias</th><th>previous</th>'
           '<th>who</th><th>why</th><th>on the charts at (event time)</th></tr>']
    for row in data.audit:
        action = str(row.get("action", ""))
        version, previous = row.get("version"), row.get("previous_version")
        charted = ""
        if row["id"] in at_event:
            charted = _utc(at_event[row["id"]]) if at_event[row["id"]] is not None else "no predictions yet"
        out.append(
            f'<tr><td class="when">{_e(_utc(row.get("at")))}</td>'
            f'<td><span class="badge {_e(action)}">{_e(action.replace("_", " "))}</span></td>'
            f'<td>{_e("" if version is None else f"v{version}")}</td><td>{_e(row.get("alias") or "")}</td>'
            f'<td>{_e("" if previous is None else f"v{previous}")}</td>'
            f'<td>{_e(row.get("actor"))}</td><td>{_e(row.get("reason"))}</td><td class="when">{_e(charted)}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _sections(data: ReportData, heading: str = "h2", id_prefix: str = "") -> str:
    domain = _x_domain(data)
    sections = [
        ("summary", "Summary", _summary(data)),
        ("psi", "PSI per feature over time", _psi_section(data, domain)),
        ("accuracy", "Accuracy per model version over time", _accuracy_section(data, domain)),
        ("coverage", "Label coverage", _coverage_section(data, domain)),
        ("timeline", "Model timeline", _timeline_section(data)),
    ]
    body = "\n".join(f'<section id="{id_prefix}{sid}"><{heading}>{_e(title)}</{heading}>\n{content}\n</section>'
                      for sid, title, content in sections)
    if id_prefix:
        # The charts' clip paths are named after their titles, the same in every model's part: one
        # page holding several models needs them unique, or a chart clips to another model's box.
        body = body.replace('id="clip-', f'id="{id_prefix}clip-').replace("url(#clip-", f"url(#{id_prefix}clip-")
    return body


def _page(title: str, body: str, generated_at: datetime | None) -> str:
    generated_at = generated_at or datetime.now(timezone.utc)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head>\n<body><main>\n"
        f"<h1>{_e(title)}</h1>"
        f'<p class="sub">Generated {_e(generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))} by driftline '
        f"{_e(__version__)}. Charts are in event time (UTC).</p>\n{body}\n</main></body></html>\n"
    )


def render(data: ReportData, generated_at: datetime | None = None) -> str:
    """The whole page on one model as one HTML string."""
    return _page(f"driftline report: {data.model}", _sections(data), generated_at)


def model_anchor(model: str) -> str:
    """The id of a model's part of the page on every model (model names may hold '.', which ids allow)."""
    return f"model-{model}"


def render_models(datas: list[ReportData], generated_at: datetime | None = None) -> str:
    """One page on several models: a table of contents, then one part per model with the same sections."""
    contents = ['<ul class="toc">'] + [f'<li><a href="#{_e(model_anchor(d.model))}">{_e(d.model)}</a>'
                                       f' (champion {"–" if d.champion is None else f"v{d.champion}"}, '
                                       f'{_fmt_int(d.events_scored)} events scored)</li>' for d in datas] + ["</ul>"]
    parts = [f'<article id="{_e(model_anchor(d.model))}"><h2>{_e(d.model)}</h2>\n'
             f'{_sections(d, heading="h3", id_prefix=model_anchor(d.model) + "-")}\n</article>' for d in datas]
    return _page(f"driftline report: {len(datas)} models", "\n".join(contents + parts), generated_at)


class UnknownModel(LookupError):
    """A report asked for a model the registry does not have; the message names those it has."""


def write_report(store, registry, path: Path, model: str | None = None) -> Path:
    """Write the HTML report to ``path`` and return the path.

    With ``model``, the page is on that model alone (it may have no versions yet:
    every section then says so). Without it, one page covers every model in the
    registry, a part per model; :class:`UnknownModel` if there is none.
    """
    path = Path(path)
    if model is not None:
        text = render(collect(store, registry, model))
    else:
        models = list(registry.models())
        if not models:
            raise UnknownModel("no models registered yet; register one with: driftline model register NAME "
                               "--data FILE --target COLUMN --champion --reason '...'")
        text = render_models([collect(store, registry, m) for m in models])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
