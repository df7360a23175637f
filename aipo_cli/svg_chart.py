"""Line charts with error bars as a standalone SVG file, for figures a README embeds.

The project has no static-image plotting backend installed (no matplotlib, and plotly's
`to_image` needs kaleido), and an SVG needs none: it is text, renders on GitHub and in every
browser, and diffs in review. Panels sit side by side and share the x axis' meaning; a point
without a value is left out, and a panel with no value at all says "unavailable" and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

PANEL_WIDTH, PANEL_HEIGHT = 340, 270
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 46, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


@dataclass(frozen=True)
class Point:
    x: float
    y: float | None
    low: float | None = None  # the error bar's ends (y ± SE, or a 95% interval); None = no bar
    high: float | None = None


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]


@dataclass(frozen=True)
class Panel:
    title: str
    series: Sequence[Series]
    unavailable: str = "no values"  # shown when no series has a value


def _extent(panel: Panel) -> tuple[float, float, float, float] | None:
    """(x_min, x_max, y_min, y_max) over every point with a value, error bars included."""
    points = [p for s in panel.series for p in s.points if p.y is not None]
    if not points:
        return None
    xs = [p.x for p in points]
    lows = [p.y if p.low is None else p.low for p in points if p.y is not None]
    highs = [p.y if p.high is None else p.high for p in points if p.y is not None]
    y_min, y_max = min(lows), max(highs)
    pad = (y_max - y_min) * 0.08 or max(abs(y_max) * 0.1, 1.0)
    return min(xs), max(xs), y_min - pad, y_max + pad


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _panel_svg(panel: Panel, left: float, x_label: str) -> list[str]:
    top, width = MARGIN_TOP, PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    x0 = left + MARGIN_LEFT
    out = [
        f'<text x="{left + PANEL_WIDTH / 2:.1f}" y="18" text-anchor="middle" font-weight="bold">'
        f"{escape(panel.title)}</text>",
        f'<rect x="{x0}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>',
        f'<text x="{x0 + width / 2:.1f}" y="{PANEL_HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
    ]
    extent = _extent(panel)
    if extent is None:
        out.append(
            f'<text x="{x0 + width / 2:.1f}" y="{top + height / 2:.1f}" text-anchor="middle" '
            f'fill="#666">unavailable: {escape(panel.unavailable)}</text>'
        )
        return out
    x_min, x_max, y_min, y_max = extent
    x_span = (x_max - x_min) or 1.0

    def sx(x: float) -> float:
        return x0 + 12 + (x - x_min) / x_span * (width - 24)

    def sy(y: float) -> float:
        return top + (y_max - y) / (y_max - y_min) * height

    for tick in _ticks(y_min, y_max):
        out.append(
            f'<line x1="{x0}" x2="{x0 + width}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{x0 - 4}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick in sorted({p.x for s in panel.series for p in s.points}):
        out.append(f'<text x="{sx(tick):.1f}" y="{top + height + 16}" text-anchor="middle">{tick:g}</text>')
    for i, series in enumerate(panel.series):
        colour = COLOURS[i % len(COLOURS)]
        dodge = (i - (len(panel.series) - 1) / 2) * 5  # px: error bars of two series side by side
        shown = [(sx(p.x) + dodge, p.y, p.low, p.high) for p in series.points if p.y is not None]
        path = " ".join(f"{x:.1f},{sy(y):.1f}" for x, y, _, _ in shown)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, low, high in shown:
            if low is not None and high is not None:
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(low):.1f}" y2="{sy(high):.1f}" '
                    f'stroke="{colour}"/>'
                )
            out.append(f'<circle cx="{x:.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}"/>')
    return out


def _legend(labels: Sequence[str], y: float) -> list[str]:
    """One legend for every panel: series i has the same colour in each."""
    out = []
    for i, label in enumerate(labels):
        x = 8 + 90 * i
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>')
        out.append(f'<text x="{x + 14}" y="{y}">{escape(label)}</text>')
    return out


def panels_svg(panels: Sequence[Panel], *, x_label: str, caption: str = "") -> str:
    """One SVG document with `panels` side by side, then a legend line and an optional caption."""
    width = PANEL_WIDTH * len(panels)
    height = PANEL_HEIGHT + 22 + (18 if caption else 0)
    body = [line for i, panel in enumerate(panels) for line in _panel_svg(panel, i * PANEL_WIDTH, x_label)]
    labels = list(dict.fromkeys(s.label for panel in panels for s in panel.series))
    body += _legend(labels, PANEL_HEIGHT + 12)
    if caption:
        body.append(f'<text x="8" y="{height - 6}" fill="#444">{escape(caption)}</text>')
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )
