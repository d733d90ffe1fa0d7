"""How the usage pages print numbers: the same format for the same kind of figure on every page."""

from decimal import Decimal
from urllib.parse import urlencode

from django import template

register = template.Library()
DASH = "—"


@register.filter
def ms(value):
    """A duration in milliseconds: "420 ms", "1.25 s"; a dash when unknown."""
    if value is None or value == "":
        return DASH
    value = float(value)
    return f"{value:,.0f} ms" if value < 1000 else f"{value / 1000:,.2f} s"


@register.filter
def pct(value, digits=1):
    """A fraction as a percentage: 0.034 -> "3.4%"; a dash when there is nothing to divide."""
    if value is None or value == "":
        return DASH
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def usd(value):
    """Dollars with enough places for per-request costs: "$12.34", "$0.0042"."""
    if value is None or value == "":
        return DASH
    value = Decimal(str(value))
    if value == 0:
        return "$0.00"
    places = 2 if abs(value) >= 10 else 4 if abs(value) >= Decimal("0.01") else 6
    return f"${value:,.{places}f}"


@register.filter
def num(value):
    """An integer with thousands separators."""
    if value is None or value == "":
        return DASH
    return f"{int(value):,}"


@register.filter
def querystring_with(items, override):
    """Build a query string from (name, value) pairs; `override` is "name=value" replacing that name."""
    name, _, value = str(override).partition("=")
    pairs = [(k, v) for k, v in items if k != name]
    if value:
        pairs.append((name, value))
    return urlencode(pairs)
