"""Inline SVG charts (no script, no library): line charts of training metrics, bar
histograms and labelled scatter plots with error bars (the student comparison). A value that
is not a finite number is left out, never drawn as zero."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Point:
    """One labelled point of a scatter chart, with optional error half-widths."""

    label: str
    x: float
    y: float
    x_half: float | None = None
    y_half: float | None = None
    marked: bool = False  # drawn filled and joined by the chart's line (e.g. a Pareto front)


def _point_label(label: str, cx: float, cy: float, colour: str, *, right: bool) -> str:
    """A point's name above it, to its left near the right edge (so it stays in the chart)."""
    x, anchor = (cx - 7, "end") if right else (cx + 7, "start")
    return f'<text x="{x:.1f}" y="{cy - 6:.1f}" text-anchor="{anchor}" fill="{colour}">{esc(label)}</text>'


def scatter_chart(title: str, points: Sequence[Point], *, x_label: str, y_label: str,
                  marked_label: str = "", chart_id: str | None = None,
                  width: int = 680, height: int = 380) -> str:
    """Labelled points with error bars (each a ``<g data-point="LABEL">``); the ``marked``
    points filled and joined by a dashed line in x order. Points without finite x and y are
    left out."""
    pts = [p for p in points if _finite(p.x) and _finite(p.y)]
    ident = f' id="{esc(chart_id)}"' if chart_id else ""
    head = (f'<svg xmlns="http://www.w3.org/2000/svg"{ident} width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(title)}"><text x="{LEFT}" y="14" font-weight="600">{esc(title)}</text>')
    if not pts:
        return head + f'<text x="{LEFT}" y="{height // 2}">no values</text></svg>'
    frame = _Frame.around(pts, width, height)
    parts = [head, *_scatter_axes(frame, x_label, y_label, height)]
    marked = sorted((p for p in pts if p.marked), key=lambda p: (p.x, -p.y))
    if len(marked) > 1:
        coords = " ".join(f"{frame.px(p.x):.1f},{frame.py(p.y):.1f}" for p in marked)
        parts.append(f'<polyline class="front" fill="none" stroke="{PALETTE[1]}" stroke-width="1.5" '
                     f'stroke-dasharray="5 3" points="{coords}"/>')
    for i, p in enumerate(pts):
        parts.append(_scatter_point(frame, p, PALETTE[i % len(PALETTE)], x_label, y_label))
    if marked_label:  # in the title row, right-aligned: never over a point
        parts.append(_marked_legend(LEFT + frame.pw, marked_label))
    return "".join(parts) + "</svg>"


def _half(h: float | None) -> float:
    return h if _finite(h) else 0.0


def _span(lo_hi: list[float]) -> tuple[float, float]:
    """The range of ``lo_hi`` padded by 8 % (a single value: by 10 % of it, or 0.5)."""
    lo, hi = min(lo_hi), max(lo_hi)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 0.5
    return lo - pad, hi + pad


@dataclass(frozen=True, slots=True)
class _Frame:
    """A scatter chart's plot area (pw x ph pixels) and the data ranges it maps onto it."""

    x0: float
    x1: float
    y0: float
    y1: float
    pw: int
    ph: int

    @classmethod
    def around(cls, pts: Sequence[Point], width: int, height: int) -> _Frame:
        """Ranges holding every point with its error bars; room left for the x axis title."""
        x0, x1 = _span([v for p in pts for v in (p.x - _half(p.x_half), p.x + _half(p.x_half))])
        y0, y1 = _span([v for p in pts for v in (p.y - _half(p.y_half), p.y + _half(p.y_half))])
        return cls(x0, x1, y0, y1, width - LEFT - RIGHT - 10, height - TOP - BOTTOM - 14)

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def py(self, y: float) -> float:
        return TOP + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph


def _scatter_axes(frame: _Frame, x_label: str, y_label: str, height: int) -> list[str]:
    """The plot area, grid lines with y ticks, x ticks and both axis titles."""
    px, py, pw, ph = frame.px, frame.py, frame.pw, frame.ph
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#d8dde3"/>']
    for t in _ticks(frame.y0, frame.y1):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eef1f4"/>'
                     f'<text x="{LEFT - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{esc(_label(t))}</text>')
    for t in _ticks(frame.x0, frame.x1):
        parts.append(f'<text x="{px(t):.1f}" y="{TOP + ph + 14}" text-anchor="middle">{esc(_label(t))}</text>')
    parts.append(f'<text x="{LEFT + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>'
                 f'<text x="12" y="{TOP + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {TOP + ph / 2:.1f})">{esc(y_label)}</text>')
    return parts


def _error_bars(frame: _Frame, p: Point, colour: str, cx: float, cy: float) -> str:
    """A horizontal bar for ``x_half``, a capped vertical one for ``y_half`` (when > 0)."""
    bars = []
    if _finite(p.x_half) and p.x_half > 0:
        a, b = frame.px(p.x - p.x_half), frame.px(p.x + p.x_half)
        bars.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{colour}"/>')
    if _finite(p.y_half) and p.y_half > 0:
        a, b = frame.py(p.y - p.y_half), frame.py(p.y + p.y_half)
        bars.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{a:.1f}" y2="{b:.1f}" stroke="{colour}"/>'
                    f'<line x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{a:.1f}" y2="{a:.1f}" stroke="{colour}"/>'
                    f'<line x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{b:.1f}" y2="{b:.1f}" stroke="{colour}"/>')
    return "".join(bars)


def _scatter_point(frame: _Frame, p: Point, colour: str, x_label: str, y_label: str) -> str:
    """One ``<g data-point>``: tooltip, error bars, the dot (filled when marked) and its name."""
    cx, cy = frame.px(p.x), frame.py(p.y)
    fill = colour if p.marked else "#fff"
    tip = f"{p.label}: {x_label} {_label(p.x)}, {y_label} {_label(p.y)}"
    return (f'<g class="point{" marked" if p.marked else ""}" data-point="{esc(p.label)}">'
            f'<title>{esc(tip)}</title>{_error_bars(frame, p, colour, cx, cy)}'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{fill}" stroke="{colour}" stroke-width="2"/>'
            f'{_point_label(p.label, cx, cy, colour, right=cx > LEFT + frame.pw * 0.7)}</g>')


def _marked_legend(x: float, marked_label: str) -> str:
    """Filled dot = ``marked_label``, hollow dot = others, ending at ``x``."""
    return (f'<circle cx="{x - 150}" cy="10" r="4" fill="{PALETTE[1]}"/>'
            f'<text x="{x - 142}" y="14">{esc(marked_label)}</text>'
            f'<circle cx="{x - 40}" cy="10" r="4" fill="#fff" stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<text x="{x - 32}" y="14">others</text>')
