"""Screenshots for NOTES.md (issue 29): ``s2dit cache ls`` and ``s2dit cache estimate`` as a
terminal 80 columns wide shows them, and the report of a tiny run at 1280 px, each rendered by
headless Chromium (Debian's package) into a PNG. They are written into $S2DIT_SCREENSHOTS when it
is set (docs/screenshots/ came from ``S2DIT_SCREENSHOTS=docs/screenshots pytest -m ''
tests/pipeline/test_screenshots.py``), else into the test's temporary folder: a default run
writes nothing into the repository. The report's is slow: it trains the tiny run (KD and AR a few
steps, scores, a sample)."""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import PageReport, check_page, find_chromium
from PIL import Image, ImageChops
from rich.console import Console
from rich.terminal_theme import MONOKAI
from rich.text import Text

from pipeline.cli import main

_spec = importlib.util.spec_from_file_location(
    "screenshots_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(find_chromium() is None, reason=(
                  "chromium is not installed: `make setup` installs Debian's chromium package as "
                  "root, or set $CHROMIUM to a Chromium binary"))]

ROOT = Path(__file__).resolve().parents[2]
SHOTS_ENV = "S2DIT_SCREENSHOTS"
COLUMNS = 80
# 80 columns of 14 px DejaVu Sans Mono (0.602 em = 8.43 px each) and 8 px padding a side: a line
# of 81 columns would overflow the page sideways
TEXT_VIEWPORT = 696
REPORT_VIEWPORT = 1280
MAX_PNG = 300_000  # bytes: the committed screenshots stay small
# rich's export_html template ({stylesheet} is empty with inline styles)
PAGE = """<!DOCTYPE html>
<html><head><meta charset="UTF-8"><title>s2dit at 80 columns</title><style>{stylesheet}
body {{ margin: 0; color: {foreground}; background-color: {background}; }}
pre {{ margin: 0; padding: 10px 8px; font: 14px/1.3 'DejaVu Sans Mono', monospace; }}
</style></head><body><pre><code style="font-family:inherit">{code}</code></pre></body></html>
"""


# resolved at import: relative to where pytest started (a test below changes directory)
WANTED = Path(os.environ[SHOTS_ENV]).resolve() if os.environ.get(SHOTS_ENV) else None


def shots(tmp_path: Path) -> Path:
    folder = WANTED or tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shrink(png: Path, *, crop: bool) -> None:
    """A palette PNG (256 colours): text and tables keep their look at a fraction of the bytes.
    ``crop``: without the rows of plain background below the content (Chromium shoots at least
    the 800 px viewport), keeping a 10 px margin."""
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    if crop:
        content = ImageChops.difference(rgb, Image.new("RGB", rgb.size, rgb.getpixel((0, 0)))).getbbox()
        bottom = min(rgb.height, (content[3] if content else 0) + 10)
        rgb = rgb.crop((0, 0, rgb.width, bottom))
    rgb.quantize(256).save(png, optimize=True)


def terminal(argv: list[str], monkeypatch, capsys) -> str:
    """What ``s2dit ARGV`` prints on a terminal 80 columns wide (rich's styles as ANSI codes)."""
    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stdout as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, f"s2dit {' '.join(argv)}: {captured.err}"
    return captured.out


def text_shot(ansi: str, png: Path, headers: list[str]) -> list[str]:
    """Render terminal output in Chromium at 80 columns into ``png``; check it fits. Its lines."""
    lines = Text.from_ansi(ansi).plain.rstrip("\n").splitlines()
    too_wide = [line for line in lines if len(line.rstrip()) > COLUMNS]
    assert not too_wide, f"lines wider than {COLUMNS} columns: {too_wide}"
    missing = [h for h in headers if not any(h in line for line in lines)]
    assert not missing, f"{missing} not printed:\n" + "\n".join(lines)
    console = Console(width=COLUMNS, file=io.StringIO(), record=True, force_terminal=True,
                      color_system="truecolor")
    console.print(Text.from_ansi(ansi), soft_wrap=True, end="")
    page = png.with_suffix(".html")
    console.save_html(str(page), theme=MONOKAI, code_format=PAGE, inline_styles=True)
    report = check_page(str(page), screenshot=str(png), width=TEXT_VIEWPORT, wait_s=5, timeout=60)
    page.unlink()
    assert report.width <= TEXT_VIEWPORT, f"the text overflows {TEXT_VIEWPORT} px: {report.width}"
    check_png(png, TEXT_VIEWPORT, min_height=len(lines) * 14, crop=True)
    return lines


def check_png(png: Path, width: int, *, min_height: int, crop: bool) -> None:
    shrink(png, crop=crop)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width == width, (image.format, image.size)
        assert image.height >= min_height, (image.size, min_height)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 4, "a blank screenshot"
    assert png.stat().st_size < MAX_PNG, f"{png}: {png.stat().st_size} bytes"
    print(f"screenshot: {png}")


@pytest.fixture
def short_folder() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="s2dit-") as folder:
        yield folder


def test_cache_ls_at_80_columns(tmp_path, short_folder, monkeypatch, capsys):
    """Two generations (a create and a filter), tagged, listed as the README's runs/demo/cache (in
    a short temporary folder: ls prints the absolute path)."""
    monkeypatch.chdir(short_folder)
    cache = factory.make_cache("runs/demo/cache", seeds=2)
    for argv in (["cache", "tag", cache, "train"], ["cache", "filter", cache, "--where", "seed < 1"],
                 ["cache", "tag", cache, "seed0"]):
        assert main(argv) == 0, argv
    ansi = terminal(["cache", "ls", cache], monkeypatch, capsys)
    lines = text_shot(ansi, shots(tmp_path) / "cache_ls.png",
                      ["gen", "tags", "operation", "samples", "size", "format", "created"])
    rows = [line.split() for line in lines if "wds/raw" in line]
    assert [(r[0], r[1]) for r in rows] in ([("2", "seed0"), ("1", "train")],
                                            [("1", "train"), ("2", "seed0")]), lines


def test_cache_estimate_at_80_columns(tmp_path, monkeypatch, capsys):
    config = str(ROOT / "configs" / "wan22_a14b.toml")
    ansi = terminal(["cache", "estimate", "--config", config], monkeypatch, capsys)
    lines = text_shot(ansi, shots(tmp_path) / "cache_estimate.png",
                      ["cache", "size per sample", "memory per actor", "GPU peak", "compute",
                       "time a sample", "work units"])
    assert any(line.startswith("GPU peak") and "fits" in line for line in lines)


@pytest.mark.slow
def test_report_at_1280_px(tmp_path):
    from test_report import build_tiny_run

    from pipeline.report import write_report

    run = build_tiny_run(tmp_path / "run")
    png = shots(tmp_path) / "report.png"
    report: PageReport = check_page(write_report(str(run)), screenshot=str(png),
                                    width=REPORT_VIEWPORT, wait_s=20, timeout=90)
    assert report.broken() == []
    assert {"quality", "stages", "cache-summary", "verify"} <= set(report.tables)
    assert report.width <= REPORT_VIEWPORT, f"the report overflows sideways: {report.width} px"
    check_png(png, REPORT_VIEWPORT, min_height=min(report.height, 16000), crop=False)
