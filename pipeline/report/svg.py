"""Inline SVG charts (no script, no library): line charts of training metrics and bar
histograms. A value that is not a finite number is left out, never drawn as zero."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .html import esc

PALETTE = ("#2f6fd0", "#d9622b", "#2c8a4b", "#8e44ad", "#b58a1b", "#c8372d")
W, H, LEFT, RIGHT, TOP, BOTTOM = 380, 200, 52, 10, 22, 28


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _label(v: float) -> str:
    return f"{v:.3g}"


def line_chart(title: str, series: dict[str, Sequence[tuple[float, float]]], *,
               log_y: bool = False, x_label: str = "step") -> str:
    """One chart of named (x, y) series; ``log_y`` when every y is > 0 (losses)."""
    clean = {name: [(x, y) for x, y in pts if _finite(x) and _finite(y) and (not log_y or y > 0)]
             for name, pts in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{esc(title)}">'
    head += f'<text x="{LEFT}" y="14" font-weight="600">{esc(title)}</text>'
    if not clean:
        return head + f'<text x="{LEFT}" y="{H // 2}">no values</text></svg>'
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [math.log10(y) if log_y else y for pts in clean.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + ph - ((math.log10(y) if log_y else y) - y0) / (y1 - y0) * ph

    parts = [head, f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#d8dde3"/>']
    for t in _ticks(y0, y1):
        y = TOP + ph - (t - y0) / (y1 - y0) * ph
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef1f4"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{esc(_label(10 ** t if log_y else t))}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{px(t):.1f}" y="{H - 10}" text-anchor="middle">{esc(_label(t))}</text>')
    parts.append(f'<text x="{LEFT + pw}" y="{H - 1}" text-anchor="end">{esc(x_label)}</text>')
    for i, (name, pts) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="2.5" fill="{colour}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        parts.append(f'<text x="{LEFT + pw - 4}" y="{TOP + 12 + 12 * i}" text-anchor="end" '
                     f'fill="{colour}">{esc(name)}</text>')
    return "".join(parts) + "</svg>"


def histogram(title: str, values: Sequence[float], *, bins: int = 12, unit: str = "") -> str:
    """Bars of how many values fall in each of ``bins`` equal ranges."""
    values = [v for v in values if _finite(v)]
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{esc(title)}">'
    head += f'<text x="{LEFT}" y="14" font-weight="600">{esc(title)}</text>'
    if not values:
        return head + f'<text x="{LEFT}" y="{H // 2}">no values</text></svg>'
    lo, hi = min(values), max(values)
    bins = 1 if hi == lo else bins
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    top = max(counts)
    parts = [head, f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#d8dde3"/>']
    bar_w = pw / bins
    for i, count in enumerate(counts):
        h = count / top * ph
        parts.append(f'<rect x="{LEFT + i * bar_w + 1:.1f}" y="{TOP + ph - h:.1f}" width="{bar_w - 2:.1f}" '
                     f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{count}</title></rect>')
    parts.append(f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{LEFT - 4}" y="{TOP + ph}" text-anchor="end">0</text>')
    parts.append(f'<text x="{LEFT}" y="{H - 10}">{esc(_label(lo))}{esc(unit)}</text>')
    parts.append(f'<text x="{LEFT + pw}" y="{H - 10}" text-anchor="end">{esc(_label(hi))}{esc(unit)}</text>')
    return "".join(parts) + "</svg>"
