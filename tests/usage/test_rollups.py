"""The hourly rollup counts exactly the rows the writer inserts, merged across batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum

from tests.usage.conftest import make_row, write
from usage.models import LATENCY_FIELDS, TTFT_FIELDS, UsageHourly
from usage.rollups import latency_bucket

pytestmark = pytest.mark.django_db
HOUR = datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_rows_of_one_hour_key_and_route_are_summed_into_one_rollup_row_across_batches(api_key):
    key, _ = api_key()
    write(
        [
            make_row(
                created_at=HOUR + timedelta(minutes=5),
                api_key=key,
                prompt_tokens=10,
                completion_tokens=5,
                latency_ms=120,
                ttft_ms=40,
            )
        ]
    )
    write(
        [
            make_row(
                created_at=HOUR + timedelta(minutes=59, seconds=59),
                api_key=key,
                prompt_tokens=1,
                completion_tokens=2,
                latency_ms=130,
                fallback=True,
            )
        ]
    )
    rollup = UsageHourly.objects.get()
    assert rollup.hour == HOUR and rollup.api_key_id == key.id and rollup.status_class == 2
    assert (rollup.requests, rollup.prompt_tokens, rollup.completion_tokens, rollup.fallbacks) == (2, 11, 7, 1)
    assert getattr(rollup, LATENCY_FIELDS[latency_bucket(120)]) == 2
    assert rollup.ttft_count == 1 and getattr(rollup, TTFT_FIELDS[latency_bucket(40)]) == 1


def test_a_new_hour_status_class_or_route_starts_a_new_rollup_row(api_key):
    key, _ = api_key()
    write(
        [
            make_row(created_at=HOUR, api_key=key),
            make_row(created_at=HOUR + timedelta(hours=1), api_key=key),
            make_row(created_at=HOUR, api_key=key, status=502),
            make_row(created_at=HOUR, api_key=key, tier="premium"),
        ]
    )
    assert UsageHourly.objects.count() == 4
    assert UsageHourly.objects.get(status_class=5).errors == 1


def test_rows_without_a_key_are_rolled_up_under_key_zero_and_still_merge():
    write([make_row(created_at=HOUR, status=401, tier="")])
    write([make_row(created_at=HOUR, status=401, tier="")])
    write([make_row(created_at=HOUR, key_prefix="master")])
    assert UsageHourly.objects.filter(api_key_id=0, key_prefix="").get().requests == 2
    assert UsageHourly.objects.filter(api_key_id=0, key_prefix="master").get().requests == 1


def test_rollup_totals_equal_request_log_totals_for_the_generated_traffic(traffic):
    from usage.models import RequestLog

    rollup = UsageHourly.objects.aggregate(requests=Sum("requests"), tokens=Sum("prompt_tokens"), cost=Sum("cost_usd"))
    log = RequestLog.objects.aggregate(tokens=Sum("prompt_tokens"), cost=Sum("cost_usd"))
    assert rollup["requests"] == RequestLog.objects.count() == len(traffic.rows)
    assert rollup["tokens"] == log["tokens"]
    assert float(rollup["cost"]) == pytest.approx(float(log["cost"]), abs=1e-6)


@pytest.mark.parametrize(
    "ms, bucket",
    [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 3),
        (5, 4),
        (49, 9),
        (50, 10),
        (999, 17),
        (1000, 18),
        (59999, 25),
        (60000, 26),
        (10**7, 26),
    ],
)
def test_latency_buckets_are_half_open_intervals(ms, bucket):
    assert latency_bucket(ms) == bucket


def test_the_daily_rollup_holds_the_same_sums_as_the_hourly_one_per_day(traffic):
    from django.db.models.functions import TruncDay

    from usage.models import UsageDaily

    hourly = {
        (row["d"], row["alias"]): row
        for row in UsageHourly.objects.annotate(d=TruncDay("hour"))
        .values("d", "alias")
        .annotate(n=Sum("requests"), c=Sum("completion_tokens"), l3=Sum("lat_3"))
    }
    daily = {
        (row["day"], row["alias"]): row
        for row in UsageDaily.objects.values("day", "alias").annotate(
            n=Sum("requests"), c=Sum("completion_tokens"), l3=Sum("lat_3")
        )
    }
    assert hourly.keys() == daily.keys()
    for key, row in hourly.items():
        assert (row["n"], row["c"], row["l3"]) == (daily[key]["n"], daily[key]["c"], daily[key]["l3"])


def test_plan_reads_whole_days_daily_and_the_hours_around_them_hourly():
    from usage.reports import plan

    start, end = datetime(2026, 3, 1, 15, tzinfo=UTC), datetime(2026, 3, 8, 15, tzinfo=UTC)
    hours, days = plan(start, end)
    assert days == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC))
    assert hours == [(start, datetime(2026, 3, 2, tzinfo=UTC)), (datetime(2026, 3, 8, tzinfo=UTC), end)]
    # Less than one whole day: hourly only. Exactly whole days: daily only.
    assert plan(start, start + timedelta(hours=24)) == ([(start, start + timedelta(hours=24))], None)
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    assert plan(midnight, midnight + timedelta(days=2)) == ([], (midnight, midnight + timedelta(days=2)))


def test_a_batch_with_more_groups_than_one_statement_holds_is_merged_completely(api_key):
    from usage.models import UsageDaily
    from usage.rollups import GROUPS_PER_STATEMENT

    key, _ = api_key()
    count = GROUPS_PER_STATEMENT * 2 + 50
    write([make_row(created_at=HOUR + timedelta(hours=i), api_key=key) for i in range(count)])
    write([make_row(created_at=HOUR + timedelta(hours=i), api_key=key) for i in range(count)])
    assert UsageHourly.objects.count() == count
    assert set(UsageHourly.objects.values_list("requests", flat=True)) == {2}
    assert UsageDaily.objects.aggregate(n=Sum("requests"))["n"] == 2 * count
