"""The comparison page in real headless Chromium (tests/pipeline/browser.py): the Pareto plot
renders with one point per variant (the front marked), the tables are there, nothing is broken."""

from __future__ import annotations

import pytest
from browser import check_page, find_chromium
from test_compare import fake_results

from pipeline.compare.page import write_page

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=(
    "chromium is not installed: `make setup` installs Debian's chromium package as root, or set "
    "$CHROMIUM to a Chromium binary"))


def test_the_comparison_page_shows_the_pareto_plot_in_chromium(tmp_path):
    variants = {"s2dit": (5.0, 0.9), "full_attention": (9.0, 0.95), "full_attention_window": (5.5, 0.6),
                "full_attention_narrow": (6.0, 0.7), "lcha_only": (3.0, 0.5), "conv_only": (2.0, 0.33)}
    page = write_page(fake_results(variants), str(tmp_path / "index.html"))
    report = check_page(page, screenshot=str(tmp_path / "compare.png"), wait_s=5, timeout=60)
    print(f"screenshot: {tmp_path / 'compare.png'}")
    assert report.broken() == [] and report.title == "s2dit: students compared"
    (plot,) = [s for s in report.svgs if s["id"] == "pareto"]
    assert plot["width"] > 300 and plot["height"] > 200
    assert sorted(p["label"] for p in plot["points"]) == sorted(variants)
    assert all(p["width"] > 0 for p in plot["points"])  # drawn, not just present
    assert {p["label"] for p in plot["points"] if p["marked"]} == {"conv_only", "lcha_only", "s2dit",
                                                                  "full_attention"}
    assert {"compare-held-out-seeds", "compare-versus", "compare-teacher", "compare-seeds",
            "compare-variants"} <= set(report.tables)
