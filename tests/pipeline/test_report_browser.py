"""The report in real headless Chromium (Debian's package; `make setup` installs it as root):
every image decodes (natural size > 0), every video loads its metadata, the quality table is
there; a full-page screenshot is saved. Fast: a run up to its verified cache (the teacher's
clips, the cache card). Slow: the tiny finished run (KD and AR few steps, scores, sample)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from browser import check_page, find_chromium
from test_report import build_partial_run, build_tiny_run

from pipeline.report import write_report

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(find_chromium() is None, reason=(
                  "chromium is not installed: `make setup` installs Debian's chromium package as "
                  "root, or set $CHROMIUM to a Chromium binary"))]


def _open(run: Path, screenshot: Path):
    report = check_page(write_report(str(run)), screenshot=str(screenshot), wait_s=20, timeout=90)
    print(f"screenshot: {screenshot}")
    assert report.broken() == []
    assert all(v["width"] > 0 and v["height"] > 0 and v["duration"] > 0 for v in report.videos)
    assert "quality" in report.tables and "stages" in report.tables
    shot = iio.imread(screenshot)
    assert shot.shape[1] == 1280 and shot.shape[0] >= min(report.height, 16000) > 800
    return report


def test_partial_run_report_loads_in_chromium(tmp_path):
    run, _, _ = build_partial_run(tmp_path / "run", seeds=1)
    report = _open(run, tmp_path / "report.png")
    assert len(report.videos) == 4  # the teacher's clips of 4 prompts; students pending
    assert len(report.images) == 4 + 6  # their frame strips, the cache card's x0 previews


@pytest.mark.slow
def test_tiny_run_report_loads_in_chromium(tmp_path):
    run = build_tiny_run(tmp_path / "run")
    report = _open(run, tmp_path / "report.png")
    assert len(report.videos) == 4 * 4 + 2  # 4 stages x 4 prompts, the sample stage's 2
    assert len(report.images) == 4 * 4 + 6
    assert {"cache-summary", "cache-step-stats", "verify"} <= set(report.tables)


def test_the_check_names_what_did_not_load(tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video" * 64)
    iio.imwrite(tmp_path / "ok.png", np.full((8, 8, 3), 200, np.uint8))
    page = tmp_path / "p.html"
    page.write_text('<html><head><title>t</title></head><body><img src="ok.png"><img src="gone.png">'
                    '<video src="garbage.mp4"></video><table id="quality"></table></body></html>')
    report = check_page(str(page), wait_s=10)
    assert report.images[0]["width"] == 8
    broken = report.broken()
    assert len(broken) == 2 and broken[0] == "image gone.png"
    assert broken[1].startswith("video ") and broken[1].endswith("garbage.mp4 (readyState 0, error 4)")
