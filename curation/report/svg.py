"""Inline SVG charts for the report: a bar chart and a line chart, drawn by hand.

The report must open with no network and no JavaScript, so charts are plain SVG elements written
into the page. Each chart has an explicit ``width``/``height`` and a ``viewBox`` (it keeps its size
in any browser and scales when printed), axis ticks at round values, and a ``<title>`` per bar or
point so hovering shows the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH = 560
HEIGHT = 240
MARGIN_LEFT = 56
MARGIN_RIGHT = 16
MARGIN_TOP = 16
MARGIN_BOTTOM = 40
LEGEND_WIDTH = 170
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 x 10^n)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3g}"


def _open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def _y_axis(parts: list[str], ticks: list[float], scale, plot_right: float) -> None:
    for tick in ticks:
        y = scale(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{plot_right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="11">{_label(tick)}</text>'
        )


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """A vertical bar chart: one bar per label. Labels are thinned out when they would overlap."""
    parts = _open(title, width, height)
    plot_right = width - MARGIN_RIGHT
    plot_bottom = height - MARGIN_BOTTOM
    ticks = nice_ticks(0.0, max([float(v) for v in values], default=0.0) or 1.0)
    top = ticks[-1]

    def scale(value: float) -> float:
        return plot_bottom - (plot_bottom - MARGIN_TOP) * (value / top)

    _y_axis(parts, ticks, scale, plot_right)
    slot = (plot_right - MARGIN_LEFT) / max(len(values), 1)
    every = max(1, math.ceil(len(labels) * 28 / max(plot_right - MARGIN_LEFT, 1)))
    for i, (label, value) in enumerate(zip(labels, values)):
        x = MARGIN_LEFT + i * slot + slot * 0.1
        y = scale(float(value))
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{plot_bottom - y:.1f}" fill="{PALETTE[0]}">'
            f"<title>{escape(str(label))}: {_label(float(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{plot_bottom + 14}" text-anchor="middle" '
                f'font-size="11">{escape(str(label))}</text>'
            )
    _axes(parts, width, height, x_label, y_label)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH + LEGEND_WIDTH,
    height: int = HEIGHT,
) -> str:
    """One polyline per named series of (x, y) points, with a legend; non-finite points are
    skipped (a diverged loss must not break the chart)."""
    clean = {
        name: [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        for name, points in series.items()
    }
    clean = {name: points for name, points in clean.items() if points}
    xs = [x for points in clean.values() for x, _ in points] or [0.0]
    ys = [y for points in clean.values() for _, y in points] or [0.0]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    plot_right = width - MARGIN_RIGHT - LEGEND_WIDTH
    plot_bottom = height - MARGIN_BOTTOM

    def sx(value: float) -> float:
        span = (x_ticks[-1] - x_ticks[0]) or 1.0
        return MARGIN_LEFT + (plot_right - MARGIN_LEFT) * (value - x_ticks[0]) / span

    def sy(value: float) -> float:
        span = (y_ticks[-1] - y_ticks[0]) or 1.0
        return plot_bottom - (plot_bottom - MARGIN_TOP) * (value - y_ticks[0]) / span

    parts = _open(title, width, height)
    _y_axis(parts, y_ticks, sy, plot_right)
    for tick in x_ticks:
        parts.append(
            f'<text x="{sx(tick):.1f}" y="{plot_bottom + 14}" text-anchor="middle" '
            f'font-size="11">{_label(tick)}</text>'
        )
    for i, (name, points) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if len(points) == 1:  # a single iteration still shows as a dot
            x, y = points[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        legend_y = MARGIN_TOP + 14 * i + 8
        parts.append(
            f'<rect x="{plot_right + 10:.1f}" y="{legend_y - 8}" width="10" height="10" '
            f'fill="{colour}"/><text x="{plot_right + 24:.1f}" y="{legend_y + 1}" '
            f'font-size="11">{escape(name)}</text>'
        )
    _axes(parts, width, height, x_label, y_label)
    parts.append("</svg>")
    return "".join(parts)


def _axes(parts: list[str], width: int, height: int, x_label: str, y_label: str) -> None:
    plot_bottom = height - MARGIN_BOTTOM
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{plot_bottom}" '
        'stroke="#333"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{(MARGIN_LEFT + width) / 2:.1f}" y="{height - 6}" text-anchor="middle" '
            f'font-size="12">{escape(x_label)}</text>'
        )
    if y_label:
        middle = (MARGIN_TOP + plot_bottom) / 2
        parts.append(
            f'<text x="14" y="{middle:.1f}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 14 {middle:.1f})">{escape(y_label)}</text>'
        )
