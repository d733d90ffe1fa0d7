"""Server-rendered SVG charts: stacked bars per time bucket, split by tier. Pure geometry over plain lists —
no database, no JavaScript, no CDN, so the pages work on a closed network and print as they look."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from routing.tiers import TIERS
from usage.filters import NO_TIER

WIDTH, HEIGHT = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 76, 8, 10, 26
# Bottom-up stacking order: free at the bottom, so the share that stayed free reads at a glance.
STACK_ORDER = (*TIERS, "")
TIER_LABELS = {**{tier: tier for tier in TIERS}, "": "no route"}
# An axis gets at most this many intervals (so at most six labels, which fit the chart's height).
MAX_INTERVALS = 5
UNITS = ("requests", "usd")
NO_REQUESTS = "No requests in this period"


def nice_step(peak: float, *, integers: bool = False) -> float:
    """The tick spacing for an axis from 0 to `peak`: the smallest 1, 2 or 5 × 10^n that covers `peak` in at most
    MAX_INTERVALS steps. Counts never get a step below 1 (no "2.5 requests")."""
    if peak <= 0:
        return 1.0
    raw = peak / MAX_INTERVALS
    if integers and raw <= 1:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        step = factor * magnitude
        # A hair of tolerance so 0.3 / 5 does not round up past 0.06's own step.
        if step >= raw * (1 - 1e-9):
            return step
    return 10 * magnitude


def step_decimals(step: float) -> int:
    """Decimal places that tell every multiple of `step` apart (0.0005 -> 4, 20 -> 0)."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


def nice_ticks(peak: float, *, integers: bool = False) -> list[float]:
    """Tick values from 0 up to the first multiple of the step at or above `peak`: 10 -> 0, 2, 4, 6, 8, 10;
    3 -> 0, 1, 2, 3; 0.00037 -> 0, 0.0001, …, 0.0004; nothing (0) -> 0, 1."""
    step = nice_step(peak, integers=integers)
    intervals = max(1, math.ceil(peak / step - 1e-9))
    places = step_decimals(step) + 1
    return [round(k * step, places) for k in range(intervals + 1)]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_usd(value: float) -> str:
    """Dollars with three significant digits below $1, cents above: "$0.000123", "$0.0420", "$12.50"."""
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:,.{max(2, 2 - math.floor(math.log10(abs(value))))}f}"


def tick_label(value: float, step: float, unit: str) -> str:
    """An axis label with exactly the places its step needs, so neighbouring labels never read the same."""
    if unit == "requests":
        return format_count(value)
    if value == 0:
        return "$0"
    places = step_decimals(step)
    return f"${value:,.{max(2, places) if places else 0}f}"


def stacked_bars(
    buckets: list[datetime],
    values: Mapping[str, Sequence[float]],
    *,
    bucket: str,
    unit: str,
    empty_message: str = NO_REQUESTS,
) -> dict:
    """Geometry for a stacked bar chart: `values[tier][i]` is the height of tier's segment in bucket i.

    `unit` ("requests" or "usd") decides the ticks (whole numbers for counts) and how values are printed.
    `empty_message` is shown over the chart when every value is zero; the caller knows why (no requests at all,
    or requests that cost nothing).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    fmt = format_count if unit == "requests" else format_usd
    count = max(len(buckets), 1)
    totals = [sum(values.get(tier, [0] * count)[i] for tier in STACK_ORDER) for i in range(len(buckets))]
    tick_values = nice_ticks(max(totals, default=0), integers=unit == "requests")
    step, top = tick_values[1], tick_values[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    gap = min(slot * 0.15, 3)
    label_time = "%H:%M" if bucket == "hour" else "%b %d"
    rects = []
    for i, moment in enumerate(buckets):
        base = 0.0
        when = moment.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")
        for tier in STACK_ORDER:
            value = values.get(tier, [0] * count)[i]
            if value <= 0:
                continue
            y_top = TOP + plot_h * (1 - (base + value) / top)
            height = plot_h * value / top
            rects.append(
                {
                    "x": round(LEFT + i * slot + gap / 2, 2),
                    "y": round(y_top, 2),
                    "w": round(max(slot - gap, 0.5), 2),
                    "h": round(max(height, 0.5), 2),
                    "tier": tier or NO_TIER,
                    "title": f"{when} · {TIER_LABELS[tier]}: {fmt(value)}",
                }
            )
            base += value
    ticks = [
        {"y": round(TOP + plot_h * (1 - v / top), 2), "label": tick_label(v, step, unit), "value": v}
        for v in tick_values
    ]
    every = max(1, math.ceil(len(buckets) / 8))
    labels = [
        {"x": round(LEFT + (i + 0.5) * slot, 2), "label": moment.strftime(label_time)}
        for i, moment in enumerate(buckets)
        if i % every == 0
    ]
    empty = not any(totals)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "bottom": HEIGHT - BOTTOM,
        "label_y": HEIGHT - 6,
        "rects": rects,
        "ticks": ticks,
        "labels": labels,
        "empty": empty,
        "empty_message": empty_message if empty else "",
    }
