"""The HTML report: a small embedded demo writes it, and headless Chromium renders it.

Chromium is a system package (Debian: ``apt-get install -y chromium``). Without
``/usr/bin/chromium`` the rendering test is skipped, or fails under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from driftline.config import Settings
from driftline.entry.demo import DemoPlan, run_demo
from driftline.registry import Registry
from driftline.entry.report import COVERAGE_COLOUR, MARKER_COLOUR, PSI_COLOURS, VERSION_COLOURS, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
WINDOW = (1400, 3000)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """30,000 events with drift at 15,000: v1 degrades, the retrainer promotes v2."""
    tmp = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIFTLINE_HOME", str(tmp / "home"))
        summary = run_demo(Settings(), DemoPlan(events=30_000, drift_at=15_000), progress=False,
                           report_path=tmp / "report.html")
    return tmp, summary


def test_the_demo_writes_a_self_contained_report_with_every_section(demo):
    tmp, summary = demo
    assert summary["champion_version"] == 2, summary
    report = Path(summary["report"])
    assert report == tmp / "report.html" and report.is_file()
    page = report.read_text(encoding="utf-8")
    for title in ("Summary", "PSI per feature over time", "Accuracy per model version over time",
                  "Label coverage", "Model timeline"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == 3 and "No data yet" not in page and 'class="empty"' not in page
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"<script|<link|<img|<iframe|src=|https?://|@import", page, re.I)
    # Summary: the champion, both versions, every event scored.
    assert re.search(r'<div class="k">champion</div><div class="v">v2</div>', page)
    assert re.search(r'<div class="k">events scored</div><div class="v">30,000</div>', page)
    # Timeline: the retrainer's promotion, with its reason, drawn at the event time v2 took over.
    assert "retrainer" in page and "alias moved" in page and "meets the margin" in page
    assert "2026-01-01 00:04:00" in page  # event 24,000: the first event v2 scored, 10 ms apart from 00:00
    assert PSI_COLOURS[0] in page and VERSION_COLOURS[1] in page and MARKER_COLOUR in page


def test_driftline_report_command_and_an_empty_store(demo, tmp_path, monkeypatch):
    from driftline.entry.cli import main

    home, _ = demo
    monkeypatch.setenv("DRIFTLINE_HOME", str(home / "home"))
    out = tmp_path / "cli" / "report.html"
    assert main(["report", "--out", str(out), "--model", "credit"]) == 0
    assert "Model timeline" in out.read_text(encoding="utf-8")

    # A fresh home: every section says there is nothing yet, nothing crashes.
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "empty"))
    settings = Settings()
    from driftline.store import Store

    store, registry = Store(settings.resolved_store_dsn), Registry(settings.registry_home)
    try:
        store.migrate()
        page = write_report(store, registry, tmp_path / "empty.html", "credit").read_text(encoding="utf-8")
    finally:
        registry.close()
        store.close()
    assert page.count('class="empty"') == 5 and "<svg" not in page


def test_the_report_renders_in_headless_chromium(demo, tmp_path):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with: {CHROMIUM_INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    tmp, summary = demo
    png = tmp_path / "report.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               f"--screenshot={png}", Path(summary["report"]).resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]

    pixels = read_png(png.read_bytes())
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3)
    flat = pixels.reshape(-1, 3).astype(np.int32)
    non_white = np.any(flat < 245, axis=1).mean()
    distinct = len(np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]))
    assert non_white > 0.01 and distinct > 100, (non_white, distinct)

    def count(colour: str, tolerance: int = 8) -> int:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int(np.all(np.abs(flat - rgb) <= tolerance, axis=1).sum())

    # A legend swatch is 44 pixels of its colour (a version also has a 100-pixel swatch in the summary);
    # a drawn line is hundreds more. The accuracy lines of v1 and v2,
    # the coverage line, the promotion markers and several PSI lines must be on screen.
    assert count(VERSION_COLOURS[0]) > 500, "v1 accuracy line"
    assert count(VERSION_COLOURS[1]) > 250, "v2 accuracy line"
    assert count(COVERAGE_COLOUR) > 300, "coverage line"
    assert count(MARKER_COLOUR) > 300, "promotion markers"
    assert sum(count(c) > 150 for c in PSI_COLOURS) >= 3, [count(c) for c in PSI_COLOURS]


# -- PNG ----------------------------------------------------------------------------------


def read_png(data: bytes) -> np.ndarray:
    """RGB pixels (height, width, 3) of a PNG: Pillow when installed, else decoded here."""
    try:
        from io import BytesIO

        from PIL import Image
    except ImportError:
        return _decode_png(data)
    with Image.open(BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _decode_png(data: bytes) -> np.ndarray:
    """8-bit, non-interlaced RGB / RGBA / grey PNGs: enough for Chromium's screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type)
    assert depth == 8 and channels and not interlace, f"unsupported PNG {header}"
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:  # None
            current = line.copy()
        elif kind == 1:  # Sub: a running sum per channel, modulo 256
            current = np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:  # Up
            current = line + previous
        else:  # Average and Paeth depend on the pixel to the left: byte by byte
            current = np.frombuffer(_unfilter(kind, line.tobytes(), previous.tobytes(), channels), dtype=np.uint8)
        out[y] = current
        previous = current
    pixels = out.reshape(height, width, channels)
    if channels <= 2:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


def _unfilter(kind: int, line: bytes, above: bytes, bpp: int) -> bytes:
    out = bytearray(line)
    for i in range(len(out)):
        a = out[i - bpp] if i >= bpp else 0
        b = above[i]
        if kind == 3:
            out[i] = (out[i] + ((a + b) >> 1)) & 0xFF
            continue
        c = above[i - bpp] if i >= bpp else 0
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
        out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return bytes(out)
