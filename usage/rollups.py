"""The hourly and daily usage rollups, maintained as request-log rows are written.

`usage.writer` calls `add_to_rollups(rows)` inside the transaction that inserts the rows, so a rollup never
counts a row that was not written (nor misses one that was). Rows are first summed in Python per rollup
dimension tuple, then merged with multi-row `INSERT … ON CONFLICT DO UPDATE` statements (one per table for a
typical batch), which is atomic across any number of workers writing at once (PostgreSQL and SQLite both speak
it). Never called on the request path.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection

from usage.models import (
    DEFAULT_ENDPOINT,
    LATENCY_BUCKET_EDGES_MS,
    LATENCY_FIELDS,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    TTFT_FIELDS,
    UsageDaily,
    UsageHourly,
)


def latency_bucket(ms: int) -> int:
    """Index of the histogram bucket holding `ms` (buckets are [edge[i-1], edge[i]))."""
    return bisect_right(LATENCY_BUCKET_EDGES_MS, ms)


def hour_of(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollup_dimensions(row: dict) -> tuple:
    """The rollup row a request-log row (a dict of RequestLog field names) is counted in."""
    return (
        hour_of(row["created_at"]),
        row.get("api_key_id") or 0,
        row.get("key_prefix") or "",
        row.get("alias") or "",
        row.get("policy") or "",
        row.get("tier") or "",
        row.get("provider") or "",
        row.get("upstream_model") or "",
        int(row["status"]) // 100,
        row.get("endpoint") or DEFAULT_ENDPOINT,
    )


def summarise(rows: list[dict]) -> dict[tuple, dict]:
    """Sum rows per rollup dimension tuple: {dimensions: {measure: value}}."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        dims = rollup_dimensions(row)
        sums = groups.get(dims)
        if sums is None:
            sums = groups[dims] = dict.fromkeys(ROLLUP_MEASURES, 0)
            sums["cost_usd"] = Decimal(0)
        sums["requests"] += 1
        sums["admitted"] += bool(row.get("admitted"))
        sums["errors"] += int(row["status"]) >= 400
        sums["fallbacks"] += bool(row.get("fallback"))
        sums["prompt_tokens"] += row.get("prompt_tokens") or 0
        sums["completion_tokens"] += row.get("completion_tokens") or 0
        sums["cost_usd"] += Decimal(str(row.get("cost_usd") or 0))
        sums[LATENCY_FIELDS[latency_bucket(row.get("latency_ms") or 0)]] += 1
        ttft = row.get("ttft_ms")
        if ttft is not None:
            sums["ttft_count"] += 1
            sums[TTFT_FIELDS[latency_bucket(ttft)]] += 1
    return groups


def by_day(hourly: dict[tuple, dict]) -> dict[tuple, dict]:
    """Merge hourly groups into daily ones (the first dimension becomes the UTC midnight)."""
    daily: dict[tuple, dict] = {}
    for (hour, *rest), sums in hourly.items():
        dims = (hour.replace(hour=0), *rest)
        merged = daily.get(dims)
        if merged is None:
            daily[dims] = dict(sums)
        else:
            for measure, value in sums.items():
                merged[measure] += value
    return daily


# Groups per INSERT statement: 64 parameters each stays well inside SQLite's 32766 and PostgreSQL's 65535.
GROUPS_PER_STATEMENT = 300


def _upsert_sql(model, time_column: str, groups: int) -> str:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    dimensions = (time_column, *ROLLUP_DIMENSIONS[1:])
    columns = (*dimensions, *ROLLUP_MEASURES)
    values = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(f"{quote(m)} = {table}.{quote(m)} + EXCLUDED.{quote(m)}" for m in ROLLUP_MEASURES)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES {', '.join([values] * groups)} "
        f"ON CONFLICT ({', '.join(quote(d) for d in dimensions)}) DO UPDATE SET {updates}"
    )


def _upsert(cursor, model, time_column: str, params: list[list]) -> None:
    """Merge groups into a rollup table, many groups per statement (each group appears once, as a multi-row
    ON CONFLICT requires)."""
    for start in range(0, len(params), GROUPS_PER_STATEMENT):
        chunk = params[start : start + GROUPS_PER_STATEMENT]
        cursor.execute(_upsert_sql(model, time_column, len(chunk)), [value for group in chunk for value in group])


def _params(groups: dict[tuple, dict]) -> list[list]:
    ops = connection.ops
    params = []
    cost_at = ROLLUP_MEASURES.index("cost_usd")
    # A fixed order, so two workers merging overlapping groups take their row locks in the same order.
    for dims, sums in sorted(groups.items(), key=lambda item: item[0]):
        start, *rest = dims
        measures = [sums[m] for m in ROLLUP_MEASURES]
        measures[cost_at] = ops.adapt_decimalfield_value(sums["cost_usd"], 18, 8)
        params.append([ops.adapt_datetimefield_value(start), *rest, *measures])
    return params


def add_to_rollups(rows: list[dict], *, sign: int = 1) -> None:
    """Count `rows` (the dicts being inserted into RequestLog, `api_key_id` for the key) into the hourly and
    daily rollups. Call inside the transaction that inserts the rows. `sign=-1` takes rows that are being deleted
    back out (`usage remove-generated`); rollup rows left at zero requests are then the caller's to delete.
    """
    if not rows:
        return
    hourly = summarise(rows)
    if sign != 1:
        for sums in hourly.values():
            for measure in sums:
                sums[measure] *= sign
    with connection.cursor() as cursor:
        _upsert(cursor, UsageHourly, "hour", _params(hourly))
        _upsert(cursor, UsageDaily, "day", _params(by_day(hourly)))
