"""Small bar charts drawn on the server as inline SVG, for the admin's overview page (issue 18 item 5).

Pure functions of their input, returning markup: no script, no event handler, no style attribute or element (the
Content-Security-Policy allows neither inline script nor inline style, config/settings.py), only SVG presentation
attributes, which CSP does not govern. Text is drawn in `currentColor`, so the admin's light and dark themes both
read. Every string is escaped; the result is well-formed XML. Each chart carries a <title> and a <desc> for screen
readers, and each bar segment a <title> (the browser's tooltip); the page gives the same numbers in a table too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class Series:
    """One stacked part of every bar (e.g. a status), with its colour."""

    key: str
    label: str
    color: str


@dataclass(frozen=True)
class Bar:
    """One bar: its short axis label, a longer name for its tooltips, and a value per series key."""

    label: str
    name: str
    values: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.values.values())


# Layout, in SVG user units (the viewBox scales it to the page's width).
WIDTH = 720
PLOT_HEIGHT = 160
MARGIN_LEFT = 48
MARGIN_RIGHT = 8
MARGIN_TOP = 10
AXIS_LABELS = 18
LEGEND_ROW = 20
LEGEND_ITEM = 110
FONT_SIZE = 11


def nice_ceiling(value: int, steps: int = 4) -> tuple[int, int]:
    """(top, step): an axis from 0 to `top` in at most `steps` equal steps, each step 1, 2 or 5 times a power of
    ten, top the first multiple of the step at or above `value` (and at least `steps`: an empty chart has an axis)."""
    value = max(value, steps)
    raw = value / steps
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(1, int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)))
    return step * math.ceil(value / step), step


def _attrs(**attrs: object) -> str:
    """XML attributes: names with `_` written as `-`, values escaped, floats rounded to a tenth."""
    parts = []
    for name, value in attrs.items():
        text = f"{value:.1f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape(text)}"')
    return " ".join(parts)


def stacked_bars(
    *,
    chart_id: str,
    title: str,
    description: str,
    series: Sequence[Series],
    bars: Sequence[Bar],
    label_every: int = 1,
) -> SafeString:
    """A stacked bar chart as an <svg> element: one bar per entry of `bars`, its parts stacked in `series` order from
    the bottom, a y axis in whole numbers, every `label_every`-th bar labelled, and a legend below."""
    if not chart_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"not an id: {chart_id!r}")
    legend_rows = max(1, math.ceil(len(series) / max(1, (WIDTH - MARGIN_LEFT) // LEGEND_ITEM)))
    height = MARGIN_TOP + PLOT_HEIGHT + AXIS_LABELS + 6 + legend_rows * LEGEND_ROW
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    top, step = nice_ceiling(max((bar.total for bar in bars), default=0))
    baseline = MARGIN_TOP + PLOT_HEIGHT
    slot = plot_width / max(1, len(bars))
    bar_width = max(1.0, slot * 0.72)

    def y(value: float) -> float:
        return baseline - PLOT_HEIGHT * value / top

    svg = _attrs(
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {WIDTH} {height}",
        width=WIDTH,
        height=height,
        role="img",
        aria_labelledby=f"{chart_id}-title {chart_id}-desc",
        class_="review-chart",
        font_size=FONT_SIZE,
    )
    out = [
        f"<svg {svg}>",
        f"<title {_attrs(id=f'{chart_id}-title')}>{escape(title)}</title>",
        f"<desc {_attrs(id=f'{chart_id}-desc')}>{escape(description)}</desc>",
    ]
    # The y axis: gridlines and their numbers.
    out.append('<g fill="currentColor" stroke="none" text-anchor="end">')
    for tick in range(0, top + 1, step):
        out.append(f"<text {_attrs(x=MARGIN_LEFT - 6, y=y(tick) + 4.0)}>{tick:,}</text>")
    out.append("</g>")
    out.append('<g stroke="currentColor" stroke-opacity="0.2" stroke-width="1">')
    for tick in range(0, top + 1, step):
        out.append(f"<line {_attrs(x1=MARGIN_LEFT, x2=WIDTH - MARGIN_RIGHT, y1=y(tick), y2=y(tick))}/>")
    out.append("</g>")
    # The bars, each part with its own tooltip.
    out.append("<g>")
    for index, bar in enumerate(bars):
        x = MARGIN_LEFT + slot * index + (slot - bar_width) / 2
        stacked = 0
        for part in series:
            value = bar.values.get(part.key, 0)
            if value <= 0:
                continue
            tip = f"{bar.name}: {part.label} {value:,}"
            box = _attrs(
                x=x, y=y(stacked + value), width=bar_width, height=y(stacked) - y(stacked + value), fill=part.color
            )
            out.append(f"<rect {box}><title>{escape(tip)}</title></rect>")
            stacked += value
    out.append("</g>")
    # The x axis: the baseline and every label_every-th bar's label.
    out.append(
        f'<line {_attrs(x1=MARGIN_LEFT, x2=WIDTH - MARGIN_RIGHT, y1=baseline, y2=baseline)} stroke="currentColor"/>'
    )
    out.append('<g fill="currentColor" text-anchor="middle">')
    for index, bar in enumerate(bars):
        if index % max(1, label_every) == 0:
            x = MARGIN_LEFT + slot * index + slot / 2
            out.append(f"<text {_attrs(x=x, y=baseline + AXIS_LABELS - 4.0)}>{escape(bar.label)}</text>")
    out.append("</g>")
    # The legend.
    out.append('<g fill="currentColor">')
    per_row = max(1, (WIDTH - MARGIN_LEFT) // LEGEND_ITEM)
    for index, part in enumerate(series):
        row, column = divmod(index, per_row)
        x = MARGIN_LEFT + column * LEGEND_ITEM
        top_y = baseline + AXIS_LABELS + 6 + row * LEGEND_ROW
        out.append(f"<rect {_attrs(x=x, y=top_y, width=12, height=12, fill=part.color)}/>")
        out.append(f"<text {_attrs(x=x + 17, y=top_y + 10)}>{escape(part.label)}</text>")
    out.append("</g>")
    out.append("</svg>")
    # Every piece above is either a number we formatted or text passed through escape().
    return mark_safe("".join(out))  # noqa: S308
