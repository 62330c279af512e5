"""Small self-contained SVG charts for the HTML report: no JavaScript, no CDN, no network.

Two kinds: a line chart over time (several series, horizontal threshold lines such as an SLO, shaded
x-ranges such as the ramp) and a histogram (optionally log-x, vertical marker lines for percentiles and
thresholds). Text is escaped; every number is formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["HLine", "Series", "Band", "VLine", "histogram_chart", "line_chart", "nice_ticks", "PALETTE"]

PALETTE = {
    "blue": "#2563eb",
    "orange": "#ea580c",
    "green": "#16a34a",
    "red": "#dc2626",
    "grey": "#6b7280",
    "purple": "#7c3aed",
    "teal": "#0d9488",
    "amber": "#d97706",
}


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]
    color: str = PALETTE["blue"]
    dash: str = ""
    width: float = 1.8
    step: float = 0.0  # > 0: each point is a bucket of this width starting at x, drawn as a flat step


@dataclass
class HLine:
    y: float
    label: str
    color: str = PALETTE["red"]


@dataclass
class VLine:
    x: float
    label: str
    color: str = PALETTE["red"]


@dataclass
class Band:
    x0: float
    x1: float
    label: str
    color: str = "#e5e7eb"


@dataclass
class _Frame:
    width: int
    height: int
    left: int = 62
    right: int = 16
    top: int = 30
    bottom: int = 42
    parts: list[str] = field(default_factory=list)

    @property
    def pw(self) -> float:
        return self.width - self.left - self.right

    @property
    def ph(self) -> float:
        return self.height - self.top - self.bottom


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _svg_open(f: _Frame, title: str) -> None:
    f.parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
        f'width="{f.width}" height="{f.height}" font-family="system-ui, sans-serif" font-size="11" '
        f'role="img" aria-label="{escape(title)}">'
    )
    f.parts.append(f'<text x="{f.left}" y="18" font-size="13" font-weight="600">{escape(title)}</text>')


def _legend(f: _Frame, items: list[tuple[str, str, str]]) -> None:
    x = f.width - f.right
    for name, color, dash in reversed(items):
        w = 7 * len(name) + 26
        x -= w
        d = f' stroke-dasharray="{dash}"' if dash else ""
        f.parts.append(
            f'<line x1="{x}" y1="14" x2="{x + 16}" y2="14" stroke="{color}" stroke-width="2"{d}/>'
            f'<text x="{x + 20}" y="18">{escape(name)}</text>'
        )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 260,
    hlines: Sequence[HLine] = (),
    bands: Sequence[Band] = (),
    y_max: float | None = None,
    x_min: float | None = None,
) -> str:
    """Series over x; a threshold far above the data (over 3x its maximum) is labelled, not drawn to scale."""
    f = _Frame(width, height)
    xs = [x + s.step for s in series for x, y in s.points if y is not None] + [
        x for s in series for x, y in s.points if y is not None
    ]
    data_ys = [y for s in series for _, y in s.points if y is not None]
    data_top = max(data_ys) if data_ys else 0.0
    far = [h for h in hlines if data_top > 0 and h.y > 3 * data_top]
    hlines = [h for h in hlines if h not in far]
    f.top += 14 * len(far)
    ys = data_ys + [h.y for h in hlines]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_min is not None:
        x0 = min(x0, x_min)
    for b in bands:
        x0, x1 = min(x0, b.x0), max(x1, b.x1)
    if x1 <= x0:
        x1 = x0 + 1
    top = y_max if y_max is not None else (max(ys) * 1.1 if ys else 1.0)
    top = top if top > 0 else 1.0
    yt = nice_ticks(0, top)
    top = max(top, yt[-1])

    def px(x: float) -> float:
        return f.left + (x - x0) / (x1 - x0) * f.pw

    def py(y: float) -> float:
        return f.top + f.ph - min(y, top) / top * f.ph

    _svg_open(f, title)
    for b in bands:
        f.parts.append(
            f'<rect x="{px(b.x0):.1f}" y="{f.top}" width="{max(0.0, px(b.x1) - px(b.x0)):.1f}" '
            f'height="{f.ph:.1f}" fill="{b.color}" opacity="0.6"/>'
            f'<text x="{px(b.x0) + 3:.1f}" y="{f.top + 12}" fill="#4b5563">{escape(b.label)}</text>'
        )
    for t in yt:
        f.parts.append(
            f'<line x1="{f.left}" y1="{py(t):.1f}" x2="{f.width - f.right}" y2="{py(t):.1f}" '
            f'stroke="#e5e7eb"/><text x="{f.left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">'
            f"{_fmt(t)}</text>"
        )
    for t in nice_ticks(x0, x1, 8):
        f.parts.append(
            f'<line x1="{px(t):.1f}" y1="{f.top + f.ph}" x2="{px(t):.1f}" y2="{f.top + f.ph + 4}" '
            f'stroke="#9ca3af"/><text x="{px(t):.1f}" y="{f.top + f.ph + 16}" '
            f'text-anchor="middle">{_fmt(t)}</text>'
        )
    f.parts.append(
        f'<line x1="{f.left}" y1="{f.top + f.ph}" x2="{f.width - f.right}" y2="{f.top + f.ph}" stroke="#9ca3af"/>'
    )
    for h in hlines:
        f.parts.append(
            f'<line x1="{f.left}" y1="{py(h.y):.1f}" x2="{f.width - f.right}" y2="{py(h.y):.1f}" '
            f'stroke="{h.color}" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{f.width - f.right - 4}" y="{py(h.y) - 4:.1f}" text-anchor="end" '
            f'fill="{h.color}">{escape(h.label)}</text>'
        )
    for k, h in enumerate(far):
        f.parts.append(
            f'<text x="{f.width - f.right}" y="{f.top - 6 - 14 * k}" text-anchor="end" '
            f'fill="{h.color}">↑ {escape(h.label)}: far above the data, not to scale</text>'
        )
    for s in series:
        segs: list[list[tuple[float, float]]] = [[]]
        for x, y in s.points:
            if y is None:
                if segs[-1]:
                    segs.append([])
            elif s.step:
                segs[-1] += [(px(x), py(y)), (px(x + s.step), py(y))]
            else:
                segs[-1].append((px(x), py(y)))
        d = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for seg in segs:
            if len(seg) == 1:
                f.parts.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="2" fill="{s.color}"/>')
            elif seg:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
                f.parts.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="{s.width}"{d}/>')
    _legend(f, [(s.name, s.color, s.dash) for s in series])
    f.parts.append(
        f'<text x="{f.left + f.pw / 2:.0f}" y="{f.height - 6}" text-anchor="middle" '
        f'fill="#374151">{escape(x_label)}</text>'
        f'<text transform="translate(14 {f.top + f.ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'fill="#374151">{escape(y_label)}</text></svg>'
    )
    return "".join(f.parts)


def histogram_chart(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    x_label: str,
    width: int = 370,
    height: int = 230,
    vlines: Sequence[VLine] = (),
    log_x: bool = False,
    color: str = PALETTE["blue"],
) -> str:
    f = _Frame(width, height, left=46)
    _svg_open(f, title)
    far = [v for v in vlines if edges and v.x > 3 * edges[-1]]
    vlines = [v for v in vlines if v not in far]
    for k, v in enumerate(far):
        f.parts.append(
            f'<text x="{f.width - f.right}" y="{f.top + 11 + 12 * k}" text-anchor="end" '
            f'fill="{v.color}">{escape(v.label)} → (off scale)</text>'
        )
    if not counts or sum(counts) == 0 or len(edges) != len(counts) + 1:
        f.parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#6b7280">'
            f"no samples</text></svg>"
        )
        return "".join(f.parts)
    lo, hi = edges[0], edges[-1]
    for v in vlines:
        lo, hi = min(lo, v.x), max(hi, v.x)
    if log_x:
        lo = max(lo, 1e-6)
        hi = max(hi, lo * 1.0001)

    def tx(x: float) -> float:
        if log_x:
            return (math.log(max(x, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (x - lo) / (hi - lo) if hi > lo else 0.5

    def px(x: float) -> float:
        return f.left + tx(x) * f.pw

    yt = nice_ticks(0, max(counts), 4)
    top = max(float(max(counts)), yt[-1])

    def py(y: float) -> float:
        return f.top + f.ph - y / top * f.ph

    for t in yt:
        f.parts.append(
            f'<line x1="{f.left}" y1="{py(t):.1f}" x2="{f.width - f.right}" y2="{py(t):.1f}" '
            f'stroke="#e5e7eb"/><text x="{f.left - 5}" y="{py(t) + 4:.1f}" text-anchor="end">'
            f"{_fmt(t)}</text>"
        )
    for i, c in enumerate(counts):
        if c:
            a, b = px(edges[i]), px(edges[i + 1])
            f.parts.append(
                f'<rect x="{a:.1f}" y="{py(c):.1f}" width="{max(0.8, b - a - 0.5):.1f}" '
                f'height="{f.top + f.ph - py(c):.1f}" fill="{color}" opacity="0.8"/>'
            )
    if log_x:
        ticks = [
            10**k * m
            for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            for m in (1, 2, 5)
            if lo <= 10**k * m <= hi
        ]
    else:
        ticks = nice_ticks(lo, hi, 5)
    for t in ticks:
        f.parts.append(f'<text x="{px(t):.1f}" y="{f.top + f.ph + 15}" text-anchor="middle">{_fmt(t)}</text>')
    f.parts.append(
        f'<line x1="{f.left}" y1="{f.top + f.ph}" x2="{f.width - f.right}" y2="{f.top + f.ph}" stroke="#9ca3af"/>'
    )
    for k, v in enumerate(vlines):
        x = px(v.x)
        f.parts.append(
            f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.top + f.ph}" stroke="{v.color}" '
            f'stroke-width="1.5" stroke-dasharray="5 3"/><text x="{x + 3:.1f}" '
            f'y="{f.top + 11 + 12 * k}" fill="{v.color}">{escape(v.label)}</text>'
        )
    f.parts.append(
        f'<text x="{f.left + f.pw / 2:.0f}" y="{f.height - 6}" text-anchor="middle" '
        f'fill="#374151">{escape(x_label)}</text></svg>'
    )
    return "".join(f.parts)
