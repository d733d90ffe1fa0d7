"""Read-side queries for the usage pages, their CSV exports and /v1/usage.

Every total, rate, chart and percentile comes from the rollups — `UsageDaily` for the whole UTC days of a period,
`UsageHourly` for the hours around them (see `plan`) — summed in the database with one GROUP BY per source, so a
page costs a few index range scans however many RequestLog rows there are.
Only the row-by-row request log reads RequestLog, newest first over an index, one page at a time.
Nothing here writes.

Percentiles come from the rollup's latency histograms: the bucket holding the wanted rank is exact, and the value
is interpolated linearly inside it, so a reported p95 is within one bucket of the exact one (buckets:
usage.models.LATENCY_BUCKET_EDGES_MS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay

from apikeys.models import APIKey
from routing.models import Route
from routing.tiers import FREE, PREMIUM, TIERS
from usage.filters import MASTER, NO_TIER, Period, UsageFilter, ceil_hour
from usage.models import (
    LATENCY_BUCKET_EDGES_MS,
    LATENCY_FIELDS,
    ROLLUP_MEASURES,
    TTFT_FIELDS,
    RequestLog,
    UsageDaily,
    UsageHourly,
)

MILLION = Decimal(1_000_000)

# What a breakdown table may be grouped by: name -> the rollup columns that make up one row.
BREAKDOWNS = {
    "alias": ("alias",),
    "policy": ("policy",),
    "provider": ("provider", "upstream_model"),
    "key": ("api_key_id", "key_prefix"),
    "tier": ("tier",),
    "endpoint": ("endpoint",),
}


def percentile(histogram: list[int], fraction: float) -> float | None:
    """The `fraction` percentile (0..1) of a latency histogram, interpolated inside its bucket; None when empty."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = LATENCY_BUCKET_EDGES_MS[index - 1] if index > 0 else 0
            if index >= len(LATENCY_BUCKET_EDGES_MS):
                return float(lower)  # the open-ended last bucket: report its lower edge
            upper = LATENCY_BUCKET_EDGES_MS[index]
            return lower + (upper - lower) * max(rank - seen, 0) / count
        seen += count
    return float(LATENCY_BUCKET_EDGES_MS[-1])


@dataclass
class Figures:
    """The figures every page shows for a set of rows."""

    requests: int = 0
    admitted: int = 0  # requests that passed the limits: what quotas count
    errors: int = 0
    fallbacks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_histogram: list[int] = field(default_factory=lambda: [0] * len(LATENCY_FIELDS))
    ttft_histogram: list[int] = field(default_factory=lambda: [0] * len(TTFT_FIELDS))

    @classmethod
    def from_sums(cls, sums: dict) -> Figures:
        return cls(
            requests=sums.get("requests") or 0,
            admitted=sums.get("admitted") or 0,
            errors=sums.get("errors") or 0,
            fallbacks=sums.get("fallbacks") or 0,
            prompt_tokens=sums.get("prompt_tokens") or 0,
            completion_tokens=sums.get("completion_tokens") or 0,
            cost_usd=Decimal(str(sums.get("cost_usd") or 0)),
            latency_histogram=[sums.get(f) or 0 for f in LATENCY_FIELDS],
            ttft_histogram=[sums.get(f) or 0 for f in TTFT_FIELDS],
        )

    def add(self, other: Figures) -> None:
        self.requests += other.requests
        self.admitted += other.admitted
        self.errors += other.errors
        self.fallbacks += other.fallbacks
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.latency_histogram = [a + b for a, b in zip(self.latency_histogram, other.latency_histogram, strict=False)]
        self.ttft_histogram = [a + b for a, b in zip(self.ttft_histogram, other.ttft_histogram, strict=False)]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.requests if self.requests else None

    @property
    def latency_p50(self):
        return percentile(self.latency_histogram, 0.50)

    @property
    def latency_p95(self):
        return percentile(self.latency_histogram, 0.95)

    @property
    def ttft_p50(self):
        return percentile(self.ttft_histogram, 0.50)

    @property
    def ttft_p95(self):
        return percentile(self.ttft_histogram, 0.95)

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": float(round(self.cost_usd, 8)),
            "error_rate": self.error_rate,
            "fallback_rate": self.fallback_rate,
            "latency_ms_p50": _round(self.latency_p50),
            "latency_ms_p95": _round(self.latency_p95),
            "ttft_ms_p50": _round(self.ttft_p50),
            "ttft_ms_p95": _round(self.ttft_p95),
        }


def _round(value):
    return None if value is None else round(value)


_SUMS = {name: Sum(name) for name in ROLLUP_MEASURES}


# --- rollup selection -------------------------------------------------------------------------------------------


def _midnight(when: datetime) -> datetime:
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def plan(start: datetime, end: datetime) -> tuple[list[tuple[datetime, datetime]], tuple[datetime, datetime] | None]:
    """Which rollup answers which part of [start, end): the whole UTC days from UsageDaily, the hours before the
    first and after the last midnight from UsageHourly. Returns (hour ranges, day range or None)."""
    first_midnight = _midnight(start) + (timedelta(days=1) if start != _midnight(start) else timedelta(0))
    last_midnight = _midnight(end)
    if last_midnight <= first_midnight:
        return [(start, end)], None
    hours = [(a, b) for a, b in ((start, first_midnight), (last_midnight, end)) if a < b]
    return hours, (first_midnight, last_midnight)


def _narrow(qs: QuerySet, f: UsageFilter) -> QuerySet:
    """Apply the filter's keys and dimensions to a rollup queryset."""
    if f.visible_key_ids is not None:
        qs = qs.filter(api_key_id__in=f.visible_key_ids or [-1])
    if f.key == MASTER:
        qs = qs.filter(api_key_id=0, key_prefix=MASTER)
    elif f.key is not None:
        qs = qs.filter(api_key_id=f.key)
    for name in ("alias", "policy", "provider", "endpoint"):
        if getattr(f, name):
            qs = qs.filter(**{name: getattr(f, name)})
    if f.tier:
        qs = qs.filter(tier="" if f.tier == NO_TIER else f.tier)
    if f.status_class is not None:
        qs = qs.filter(status_class=f.status_class)
    elif f.status_code is not None:
        qs = qs.filter(status_class=f.status_code // 100)
    if f.errors_only:
        qs = qs.filter(status_class__gte=4)
    return qs


def sources(f: UsageFilter, *, hourly_only: bool = False) -> list[tuple[QuerySet, str]]:
    """The rollup querysets covering the filter, each with the name of its time column."""
    hours, days = plan(f.period.start, f.period.end) if not hourly_only else ([(f.period.start, f.period.end)], None)
    result = []
    if hours:
        when = Q()
        for start, end in hours:
            when |= Q(hour__gte=start, hour__lt=end)
        result.append((_narrow(UsageHourly.objects.filter(when), f), "hour"))
    if days:
        result.append((_narrow(UsageDaily.objects.filter(day__gte=days[0], day__lt=days[1]), f), "day"))
    return result


def _bucket_expression(time_column: str, bucket: str):
    if bucket == "hour":
        return F("hour")
    return F("day") if time_column == "day" else TruncDay("hour")


def grouped(f: UsageFilter, columns: tuple[str, ...], *, bucket: str | None = None) -> list[tuple[tuple, Figures]]:
    """Figures per distinct value of `columns` (and of the time bucket "hour"/"day" first, when given), busiest
    first. One GROUP BY per rollup source; the few groups are merged here."""
    merged: dict[tuple, dict] = {}
    names = ("bucket", *columns) if bucket else columns
    for qs, time_column in sources(f, hourly_only=bucket == "hour"):
        if bucket:
            qs = qs.annotate(bucket=_bucket_expression(time_column, bucket))
        rows = qs.values(*names).annotate(**_SUMS).order_by() if names else [qs.aggregate(**_SUMS)]
        for row in rows:
            key = tuple(row[c] for c in names)
            sums = merged.get(key)
            if sums is None:
                merged[key] = {m: row[m] or 0 for m in ROLLUP_MEASURES}
            else:
                for m in ROLLUP_MEASURES:
                    sums[m] += row[m] or 0
    groups = [(key, Figures.from_sums(sums)) for key, sums in merged.items()]
    groups.sort(key=lambda item: (-item[1].requests, tuple(str(v) for v in item[0])))
    return groups


def totals(f: UsageFilter) -> Figures:
    total = Figures()
    for _, figures in grouped(f, ()):
        total.add(figures)
    return total


def breakdown(f: UsageFilter, by: str) -> list[dict]:
    """A breakdown table: one dict per group with its label(s), link filter and figures."""
    columns = BREAKDOWNS[by]
    groups = grouped(f, columns)
    names = key_names([values[0] for values, _ in groups]) if by == "key" else {}
    table = []
    for values, figures in groups:
        if by == "key":
            key_id, prefix = values
            label = names.get(key_id) or (prefix or "unauthenticated")
            if key_id:
                label = f"{label} ({prefix}…)" if prefix else label
            table.append(
                {
                    "label": label,
                    "key_id": key_id or None,
                    "prefix": prefix,
                    "filter": {"key": key_id if key_id else (MASTER if prefix == MASTER else None)},
                    "figures": figures,
                }
            )
        elif by == "provider":
            provider, model = values
            table.append(
                {
                    "label": f"{provider}/{model}" if provider else "(no route)",
                    "filter": {"provider": provider},
                    "figures": figures,
                }
            )
        else:
            value = values[0]
            table.append(
                {
                    "label": value or "(none)",
                    "filter": {by: value or (NO_TIER if by == "tier" else "")},
                    "figures": figures,
                }
            )
    return table


def key_names(key_ids) -> dict[int, str]:
    ids = [k for k in key_ids if k]
    return dict(APIKey.objects.filter(id__in=ids).values_list("id", "name")) if ids else {}


# --- the overview -----------------------------------------------------------------------------------------------


def premium_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """Per alias, the (input, output) USD-per-million-token prices of its first premium route.

    "First" means the order the proxy would try it: enabled routes before disabled, then lower position, then
    lower id. An alias with no premium route has no premium price and contributes no saving.
    """
    prices: dict[str, tuple[Decimal, Decimal]] = {}
    routes = (
        Route.objects.filter(provider__tier=PREMIUM)
        .order_by("-enabled", "position", "id")
        .values_list("alias__name", "input_price_per_mtok", "output_price_per_mtok")
    )
    for alias, price_in, price_out in routes:
        prices.setdefault(alias, (Decimal(price_in), Decimal(price_out)))
    return prices


@dataclass
class Saving:
    premium_equivalent_usd: Decimal  # what the tokens of aliases with a premium route would have cost there
    actual_usd: Decimal  # what those same requests did cost
    saving_usd: Decimal


def saving(by_alias: list[tuple[tuple, Figures]], prices: dict[str, tuple[Decimal, Decimal]]) -> Saving:
    equivalent = actual = Decimal(0)
    for (alias,), figures in by_alias:
        price = prices.get(alias)
        if price is None:
            continue
        equivalent += (figures.prompt_tokens * price[0] + figures.completion_tokens * price[1]) / MILLION
        actual += figures.cost_usd
    return Saving(premium_equivalent_usd=equivalent, actual_usd=actual, saving_usd=equivalent - actual)


@dataclass
class Series:
    """Requests and cost per time bucket, split by tier ("" = no route reached)."""

    buckets: list[datetime]
    requests: dict[str, list[int]]
    cost: dict[str, list[float]]
    tier_requests: dict[str, int]
    tier_tokens: dict[str, int]


def series(f: UsageFilter, groups: list[tuple[tuple, Figures]] | None = None) -> Series:
    """Requests and cost per time bucket and tier. `groups` may pass in figures already grouped by
    (bucket, tier, ...) so the overview needs one query per rollup source, not two."""
    bucket = f.period.bucket
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first = f.period.start if bucket == "hour" else _midnight(f.period.start)
    buckets = []
    moment = first
    while moment < f.period.end:
        buckets.append(moment)
        moment += step
    index = {b: i for i, b in enumerate(buckets)}
    tiers = (*TIERS, "")
    requests = {t: [0] * len(buckets) for t in tiers}
    cost = {t: [0.0] * len(buckets) for t in tiers}
    tier_requests = dict.fromkeys(tiers, 0)
    tier_tokens = dict.fromkeys(tiers, 0)
    for (when, tier, *_rest), figures in groups if groups is not None else grouped(f, ("tier",), bucket=bucket):
        tier = tier if tier in TIERS else ""
        i = index.get(when)
        if i is not None:
            requests[tier][i] += figures.requests
            cost[tier][i] += float(figures.cost_usd)
        tier_requests[tier] += figures.requests
        tier_tokens[tier] += figures.total_tokens
    return Series(buckets=buckets, requests=requests, cost=cost, tier_requests=tier_requests, tier_tokens=tier_tokens)


def overview(f: UsageFilter) -> dict:
    """Headline figures, the saving, the tier charts and the per-alias table, from one GROUP BY per rollup source
    (by time bucket, tier and alias)."""
    groups = grouped(f, ("tier", "alias"), bucket=f.period.bucket)
    per_alias: dict[str, Figures] = {}
    total = Figures()
    for (_when, _tier, alias), figures in groups:
        per_alias.setdefault(alias, Figures()).add(figures)
        total.add(figures)
    by_alias = sorted(((alias,), figures) for alias, figures in per_alias.items())
    by_alias.sort(key=lambda item: -item[1].requests)
    chart = series(f, groups)
    free_requests = chart.tier_requests[FREE]
    free_tokens = chart.tier_tokens[FREE]
    return {
        "totals": total,
        "by_alias": [
            {"label": alias or "(none)", "filter": {"alias": alias}, "figures": figures}
            for (alias,), figures in by_alias
        ],
        "saving": saving(by_alias, premium_prices()),
        "series": chart,
        "free_share_requests": free_requests / total.requests if total.requests else None,
        "free_share_tokens": free_tokens / total.total_tokens if total.total_tokens else None,
    }


# --- quotas -----------------------------------------------------------------------------------------------------


def period_start(period: str, now: datetime) -> datetime:
    """Start of the current UTC calendar day or month (quotas reset there)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def quota_usage(api_key, now: datetime) -> list[dict]:
    """For each of the key's quotas: what it allows this period, what has been used, and the share used.

    Requests are the *admitted* ones (RequestLog.admitted, summed in the rollups), exactly what the limiter counts:
    calls refused by authentication, validation or the limits themselves never use up a quota."""
    return _quotas_used(api_key.quotas.order_by("period"), now, key=api_key.id, visible_key_ids=None)


def user_quota_usage(user_limits, key_ids, now: datetime) -> list[dict]:
    """`quota_usage` for a user's quotas (apikeys.UserQuota): the admitted requests, tokens and cost of all the
    user's keys (`key_ids`) together, which is what the limiter counts against the user."""
    return _quotas_used(user_limits.quotas.order_by("period"), now, key=None, visible_key_ids=tuple(key_ids))


def _quotas_used(quotas, now: datetime, *, key, visible_key_ids) -> list[dict]:
    result = []
    for quota in quotas:
        start = period_start(quota.period, now)
        window = UsageFilter(
            period=Period(start=start, end=ceil_hour(now) + timedelta(hours=1), preset="custom"),
            visible_key_ids=visible_key_ids,
            key=key,
        )
        used = totals(window)
        limits = []
        for label, limit, value in (
            ("requests", quota.max_requests, used.admitted),
            ("tokens", quota.max_tokens, used.total_tokens),
            ("cost (USD)", quota.max_cost_usd, used.cost_usd),
        ):
            if limit is not None:
                share = float(value) / float(limit) if limit else 1.0
                limits.append(
                    {
                        "label": label,
                        "limit": limit,
                        "used": value,
                        "share": share,
                        "percent": min(round(share * 100), 100),
                    }
                )
        result.append({"period": quota.period, "since": start, "limits": limits})
    return result


# --- the request log --------------------------------------------------------------------------------------------

LOG_PAGE_SIZE = 50


def log_rows(f: UsageFilter) -> QuerySet[RequestLog]:
    """RequestLog rows matching the filter, newest first (the request log page and its CSV export)."""
    qs = RequestLog.objects.filter(created_at__gte=f.period.start, created_at__lt=f.period.end)
    if f.visible_key_ids is not None:
        qs = qs.filter(api_key_id__in=f.visible_key_ids or [-1])
    if f.key == MASTER:
        qs = qs.filter(api_key__isnull=True, key_prefix=MASTER)
    elif f.key is not None:
        qs = qs.filter(api_key_id=int(f.key))
    for name in ("alias", "policy", "provider", "endpoint"):
        if getattr(f, name):
            qs = qs.filter(**{name: getattr(f, name)})
    if f.tier:
        qs = qs.filter(tier="" if f.tier == NO_TIER else f.tier)
    if f.status_class is not None:
        qs = qs.filter(status__gte=f.status_class * 100, status__lt=f.status_class * 100 + 100)
    elif f.status_code is not None:
        qs = qs.filter(status=f.status_code)
    if f.errors_only:
        qs = qs.filter(status__gte=400)
    return qs.order_by("-created_at", "-id")


def log_page(
    f: UsageFilter, *, before: tuple[datetime, str] | None = None, after: tuple[datetime, str] | None = None
) -> dict:
    """One page of the request log, keyset-paginated: `before` = older than that row, `after` = newer.

    Keyset pagination (no OFFSET, no COUNT over the whole log) keeps every page as fast as the first.
    """
    qs = log_rows(f)
    if before is not None:
        when, row_id = before
        qs = qs.filter(Q(created_at__lt=when) | Q(created_at=when, id__lt=row_id))
        rows = list(qs[: LOG_PAGE_SIZE + 1])
        has_newer, has_older = True, len(rows) > LOG_PAGE_SIZE
        rows = rows[:LOG_PAGE_SIZE]
    elif after is not None:
        when, row_id = after
        qs = qs.filter(Q(created_at__gt=when) | Q(created_at=when, id__gt=row_id)).order_by("created_at", "id")
        rows = list(qs[: LOG_PAGE_SIZE + 1])
        has_newer, has_older = len(rows) > LOG_PAGE_SIZE, True
        rows = rows[:LOG_PAGE_SIZE][::-1]
    else:
        rows = list(qs[: LOG_PAGE_SIZE + 1])
        has_newer, has_older = False, len(rows) > LOG_PAGE_SIZE
        rows = rows[:LOG_PAGE_SIZE]
    names = key_names({r.api_key_id for r in rows})
    for row in rows:
        row.key_name = names.get(row.api_key_id, "") if row.api_key_id is not None else ""
    return {"rows": rows, "has_newer": has_newer and bool(rows), "has_older": has_older and bool(rows)}
