"""Completion over the last weeks as an inline SVG line chart, drawn server-side.

No chart library and no CDN: the control room may have no internet, and a
few polylines are all a trend needs. Colours come from CSS classes, so the
chart follows the page's theme and passes a strict Content-Security-Policy.
"""

from __future__ import annotations

from html import escape
from typing import Callable, Sequence

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 150, 12, 28


def completion_chart(dates: Sequence[str], series: dict[str, list[float | None]], *,
                     label: Callable[[str], str], empty_text: str) -> str:
    """``series`` maps a tier to one fraction (or None: nothing scheduled) per date."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(empty_text if not series else ", ".join(label(t) for t in series))}">']
    for pct in (0, 25, 50, 75, 100):
        y = TOP + plot_h * (1 - pct / 100)
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    n = len(dates)

    def x_of(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    for i, date in enumerate(dates):
        if n <= 8 or i % 7 == (n - 1) % 7:  # a label a week, the last night always
            parts.append(f'<text class="axis" x="{x_of(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(date[5:])}</text>')
    if not series:
        parts.append(f'<text class="axis empty" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">{escape(empty_text)}</text>')
    for rank, (tier, values) in enumerate(series.items()):
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])  # a night with nothing scheduled breaks the line
                continue
            runs[-1].append(f"{x_of(i):.1f},{TOP + plot_h * (1 - max(0.0, min(1.0, v))):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline class="series s-{escape(tier)}" points="{" ".join(run)}"/>')
            for point in run:
                cx, cy = point.split(",")
                parts.append(f'<circle class="dot s-{escape(tier)}" cx="{cx}" cy="{cy}" r="2.5"/>')
        last = next(((i, v) for i, v in reversed(list(enumerate(values))) if v is not None), None)
        y_legend = TOP + 14 + rank * 20
        parts.append(f'<line class="series s-{escape(tier)}" x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 26}" y1="{y_legend - 4}" y2="{y_legend - 4}"/>')
        tail = f" {last[1] * 100:.0f}%" if last else ""
        parts.append(f'<text class="legend" x="{WIDTH - RIGHT + 30}" y="{y_legend}">{escape(label(tier))}{tail}</text>')
    parts.append("</svg>")
    return "".join(parts)
