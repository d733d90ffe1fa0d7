"""Fill the facts 0004 added: RequestLog.admitted, the rollups' `admitted` count, and the millisecond latency buckets.

1. RequestLog.admitted: until now "admitted" was inferred from the error code (apikeys.limits.NOT_ADMITTED_CODES);
   rows whose code is not one of those passed the limits.
2. Rollups: every old histogram bucket's count moves to the new bucket just below the same upper edge (the old edges
   are all new edges too), and `admitted` is set to the requests of the 2xx/5xx rows (a 4xx row could be either).
   That is all an hour whose request-log rows were pruned can get.
3. Every hour (and day) whose request-log rows are all still there — the log holds exactly as many rows as the rollup
   counted — is then recounted exactly from the log: the millisecond buckets and `admitted` become true figures.

Everything the models' lists may change later is frozen here.
"""

from bisect import bisect_right
from datetime import UTC, timedelta
from decimal import Decimal

from django.db import migrations
from django.db.models import Count, F, Sum
from django.db.models.functions import TruncHour

NOT_ADMITTED_CODES = (
    "invalid_api_key",
    "key_expired",
    "invalid_json",
    "missing_required_parameter",
    "invalid_type",
    "request_too_large",
    "model_not_found",
    "model_not_allowed",
    "unknown_policy",
    "policy_not_allowed",
    "rate_limit_exceeded",
    "quota_exceeded",
)
OLD_EDGES = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000, 60000)
NEW_EDGES = (
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    7500,
    10000,
    20000,
    60000,
)
BUCKETS = len(NEW_EDGES) + 1
DIMENSIONS = ("api_key_id", "key_prefix", "alias", "policy", "tier", "provider", "upstream_model", "status_class")
MEASURES = (
    "requests",
    "admitted",
    "errors",
    "fallbacks",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "ttft_count",
    *(f"lat_{i}" for i in range(BUCKETS)),
    *(f"ttft_{i}" for i in range(BUCKETS)),
)
LOG_COLUMNS = (
    "created_at",
    "api_key_id",
    "key_prefix",
    "alias",
    "policy",
    "tier",
    "provider",
    "upstream_model",
    "status",
    "admitted",
    "fallback",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
)


def mark_admitted(apps, schema_editor):
    RequestLog = apps.get_model("usage", "RequestLog")
    RequestLog.objects.exclude(error_code__in=NOT_ADMITTED_CODES).update(admitted=True)


def _new_index_of_old(i: int) -> int:
    return NEW_EDGES.index(OLD_EDGES[i]) if i < len(OLD_EDGES) else BUCKETS - 1


def map_old_buckets(apps, schema_editor):
    for name in ("UsageHourly", "UsageDaily"):
        model = apps.get_model("usage", name)
        targets = {_new_index_of_old(i): i for i in range(len(OLD_EDGES) + 1)}
        updates = {}
        for prefix in ("lat", "ttft"):
            for j in range(BUCKETS):
                # One UPDATE: every right-hand side reads the row as it was before the statement.
                updates[f"{prefix}_{j}"] = F(f"{prefix}_{targets[j]}") if j in targets else 0
        model.objects.update(**updates)
        model.objects.filter(status_class__in=(2, 5)).update(admitted=F("requests"))


def _bucket(ms) -> int:
    return bisect_right(NEW_EDGES, ms or 0)


def _summarise(rows, truncate) -> dict:
    groups: dict[tuple, dict[str, int | Decimal]] = {}
    for row in rows:
        dims = (
            truncate(row["created_at"]),
            *(row[d] or (0 if d == "api_key_id" else "") for d in DIMENSIONS[:-1]),
            row["status"] // 100,
        )
        sums = groups.get(dims)
        if sums is None:
            sums = groups[dims] = dict.fromkeys(MEASURES, 0)  # counts; cost_usd a Decimal
            sums["cost_usd"] = Decimal(0)
        sums["requests"] += 1
        sums["admitted"] += bool(row["admitted"])
        sums["errors"] += row["status"] >= 400
        sums["fallbacks"] += bool(row["fallback"])
        sums["prompt_tokens"] += row["prompt_tokens"] or 0
        sums["completion_tokens"] += row["completion_tokens"] or 0
        sums["cost_usd"] += Decimal(str(row["cost_usd"] or 0))
        sums[f"lat_{_bucket(row['latency_ms'])}"] += 1
        if row["ttft_ms"] is not None:
            sums["ttft_count"] += 1
            sums[f"ttft_{_bucket(row['ttft_ms'])}"] += 1
    return groups


def _complete(model, time_column, log_counts) -> set:
    """The hours (days) whose request-log rows are all still there: as many rows as the rollup counted."""
    counted = dict(model.objects.values_list(time_column).annotate(n=Sum("requests")).order_by())
    return {when for when, n in counted.items() if log_counts.get(when) == n}


def recount_from_log(apps, schema_editor):
    RequestLog = apps.get_model("usage", "RequestLog")
    Hourly = apps.get_model("usage", "UsageHourly")
    Daily = apps.get_model("usage", "UsageDaily")
    per_hour = dict(
        RequestLog.objects.annotate(h=TruncHour("created_at", tzinfo=UTC))
        .values_list("h")
        .annotate(n=Count("id"))
        .order_by()
    )
    if not per_hour:
        return
    per_day: dict = {}
    for hour, n in per_hour.items():
        day = hour.replace(hour=0)
        per_day[day] = per_day.get(day, 0) + n
    complete_hours = _complete(Hourly, "hour", per_hour)
    complete_days = _complete(Daily, "day", per_day)
    for day in sorted(per_day):
        hours = sorted(h for h in complete_hours if day <= h < day + timedelta(days=1))
        if not hours and day not in complete_days:
            continue
        rows = list(
            RequestLog.objects.filter(created_at__gte=day, created_at__lt=day + timedelta(days=1))
            .values(*LOG_COLUMNS)
            .order_by()
        )
        hourly = _summarise(rows, lambda when: when.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
        Hourly.objects.filter(hour__in=hours).delete()
        wanted = set(hours)
        Hourly.objects.bulk_create(
            [
                Hourly(hour=dims[0], **dict(zip(DIMENSIONS, dims[1:], strict=False)), **sums)
                for dims, sums in hourly.items()
                if dims[0] in wanted
            ],
            batch_size=2000,
        )
        if day in complete_days:
            daily = _summarise(
                rows, lambda when: when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            )
            Daily.objects.filter(day=day).delete()
            Daily.objects.bulk_create(
                [
                    Daily(day=dims[0], **dict(zip(DIMENSIONS, dims[1:], strict=False)), **sums)
                    for dims, sums in daily.items()
                ],
                batch_size=2000,
            )


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_admitted_synthetic_ms_latency_buckets_and_labels"),
    ]

    operations = [
        migrations.RunPython(mark_admitted, migrations.RunPython.noop),
        migrations.RunPython(map_old_buckets, migrations.RunPython.noop),
        migrations.RunPython(recount_from_log, migrations.RunPython.noop),
    ]
