"""Server-rendered SVG charts: stacked bars per time bucket, split by tier. Pure geometry over plain lists —
no database, no JavaScript, no CDN, so the pages work on a closed network and print as they look."""

from __future__ import annotations

import math
from datetime import datetime

WIDTH, HEIGHT = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 10, 26
# Bottom-up stacking order: free at the bottom, so the share that stayed free reads at a glance.
STACK_ORDER = ("free", "internal", "premium", "")
TIER_LABELS = {"free": "free", "internal": "internal", "premium": "premium", "": "no route"}


def nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 × 10^n at or above `value` (a readable top for the axis)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def stacked_bars(buckets: list[datetime], values: dict[str, list[float]], *, bucket: str, fmt) -> dict:
    """Geometry for a stacked bar chart: `values[tier][i]` is the height of tier's segment in bucket i.

    `fmt` turns a value into its label (axis ticks and tooltips).
    """
    count = max(len(buckets), 1)
    totals = [sum(values.get(tier, [0] * count)[i] for tier in STACK_ORDER) for i in range(len(buckets))]
    top = nice_ceiling(max(totals, default=0))
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
            rects.append({"x": round(LEFT + i * slot + gap / 2, 2), "y": round(y_top, 2),
                          "w": round(max(slot - gap, 0.5), 2), "h": round(max(height, 0.5), 2),
                          "tier": tier or "none", "title": f"{when} · {TIER_LABELS[tier]}: {fmt(value)}"})
            base += value
    ticks = [{"y": round(TOP + plot_h * (1 - k / 4), 2), "label": fmt(top * k / 4)} for k in range(5)]
    every = max(1, math.ceil(len(buckets) / 8))
    labels = [{"x": round(LEFT + (i + 0.5) * slot, 2), "label": moment.strftime(label_time)}
              for i, moment in enumerate(buckets) if i % every == 0]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "bottom": HEIGHT - BOTTOM,
            "label_y": HEIGHT - 6, "rects": rects, "ticks": ticks, "labels": labels, "empty": not any(totals)}
