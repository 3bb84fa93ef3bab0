"""Small HTML building blocks for the report: every text goes through ``esc`` (prompts, paths
and error messages are user input), markup is assembled from these pieces only."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1240px; padding: 16px 24px;
       color: #1d232a; background: #fafbfc; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid #d8dde3; padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; background: #fff; }
th, td { border: 1px solid #d8dde3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #fff; border: 1px solid #d8dde3; padding: 8px; overflow-x: auto; font-size: 12px;
      max-height: 420px; }
.status { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; color: #fff; }
.s-done { background: #2c8a4b; } .s-running { background: #2f6fd0; } .s-pending { background: #8a939c; }
.s-failed { background: #c8372d; } .s-skipped { background: #b58a1b; }
.pending { color: #6b7580; font-style: italic; } .error { color: #b3261e; } .ok { color: #2c8a4b; }
.muted { color: #6b7580; } .charts { display: flex; flex-wrap: wrap; gap: 12px; }
.clips { display: grid; gap: 8px 14px; align-items: start; }
.clips figure { margin: 0; } .clips figcaption { font-size: 12px; color: #46505a; }
video, img.frames { image-rendering: pixelated; background: #000; }
svg text { font: 11px system-ui, sans-serif; fill: #46505a; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers compactly (floats to 4 significant digits), everything else as text."""
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    if isinstance(value, int):
        return esc(f"{value:,}")
    return esc(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
          raw_cells: bool = False) -> str:
    """A table; cells are escaped unless ``raw_cells`` (markup built with ``esc`` already)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = cell if raw_cells and isinstance(cell, str) else fmt(cell)
            cells.append(f"<td class=\"num\">{text}</td>" if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, Any]], *, table_id: str | None = None) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{fmt(v)}</td></tr>" for k, v in pairs)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><tbody>{rows}</tbody></table>"


def status_badge(status: str) -> str:
    return f'<span class="status s-{esc(status)}">{esc(status)}</span>'


def pending(text: str) -> str:
    return f'<p class="pending">{esc(text)}</p>'


def section(title: str, body: str, *, section_id: str, status: str | None = None) -> str:
    badge = f" {status_badge(status)}" if status else ""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}{badge}</h2>{body}</section>'


def document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")
