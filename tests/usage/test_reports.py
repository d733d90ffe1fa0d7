"""The figures on the usage pages agree with SQL over RequestLog for the same period and filters.

Pages read the hourly rollup; these tests compute the same figures straight from RequestLog (tests/usage/sql.py)
and compare, for staff and for a plain user, across presets, every filter and every breakdown.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.usage import sql
from usage.reports import percentile

pytestmark = pytest.mark.django_db


def _page(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response


def _figure(response, name) -> str:
    match = re.search(rf'data-figure="{name}">([^<]*)<', response.content.decode())
    assert match, f"no {name} figure on the page"
    return match.group(1)


def _assert_same(page_figures, expected: dict):
    assert page_figures.requests == expected["requests"]
    assert page_figures.prompt_tokens == expected["prompt_tokens"]
    assert page_figures.completion_tokens == expected["completion_tokens"]
    assert page_figures.errors == expected["errors"]
    assert page_figures.fallbacks == expected["fallbacks"]
    assert float(page_figures.cost_usd) == pytest.approx(expected["cost_usd"], abs=1e-6)


@pytest.mark.parametrize("preset", ["24h", "7d", "30d"])
def test_staff_overview_totals_agree_with_sql_over_request_log(client, traffic, preset):
    response = _page(client, traffic.staff, f"/usage/?period={preset}")
    period = response.context["f"].period
    expected = sql.figures(period)
    assert expected["requests"] > 0
    _assert_same(response.context["totals"], expected)
    # And the page prints those same numbers.
    assert _figure(response, "requests") == f"{expected['requests']:,}"
    assert _figure(response, "tokens") == f"{expected['total_tokens']:,}"
    assert _figure(response, "error-rate") == f"{expected['errors'] / expected['requests'] * 100:.1f}%"
    assert _figure(response, "fallback-rate") == f"{expected['fallbacks'] / expected['requests'] * 100:.1f}%"


def test_plain_user_overview_counts_only_rows_of_keys_they_own(client, traffic):
    response = _page(client, traffic.alice, "/usage/?period=30d")
    period = response.context["f"].period
    ids = [k.id for k in traffic.alice_keys]
    expected = sql.figures(period, ["api_key_id IN (%s, %s)"], ids)
    everyone = sql.figures(period)
    assert 0 < expected["requests"] < everyone["requests"]
    _assert_same(response.context["totals"], expected)


@pytest.mark.parametrize(
    "query, conditions, params",
    [
        ("alias=rainymodel/code", ["alias = %s"], ["rainymodel/code"]),
        ("policy=premium", ["policy = %s"], ["premium"]),
        ("tier=free", ["tier = %s"], ["free"]),
        ("tier=premium&status=2xx", ["tier = %s", "status >= 200 AND status < 300"], ["premium"]),
        ("provider=ollama-primary", ["provider = %s"], ["ollama-primary"]),
        ("errors=1", ["status >= 400"], []),
        ("status=5xx", ["status >= 500 AND status < 600"], []),
        ("key=master", ["api_key_id IS NULL", "key_prefix = %s"], ["master"]),
        ("period=custom&start={60_days_ago}&end={today}", [], []),
    ],
)
def test_filtered_overview_agrees_with_sql(client, traffic, query, conditions, params):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    query = query.format(today=today, **{"60_days_ago": today - timedelta(days=60)})
    url = f"/usage/?period=30d&{query}" if "period=" not in query else f"/usage/?{query}"
    response = _page(client, traffic.staff, url)
    expected = sql.figures(response.context["f"].period, conditions, params)
    assert expected["requests"] > 0
    _assert_same(response.context["totals"], expected)


def test_key_filter_agrees_with_sql(client, traffic):
    key = traffic.bob_key
    response = _page(client, traffic.staff, f"/usage/?period=30d&key={key.id}")
    _assert_same(response.context["totals"], sql.figures(response.context["f"].period, ["api_key_id = %s"], [key.id]))


@pytest.mark.parametrize(
    "by, group_sql",
    [
        ("alias", "alias"),
        ("policy", "policy"),
        ("tier", "tier"),
        ("provider", "provider"),
        ("key", "key_prefix"),
    ],
)
def test_breakdown_tables_agree_with_group_by_sql(client, traffic, by, group_sql):
    response = _page(client, traffic.staff, f"/usage/breakdown/?by={by}&period=30d")
    expected = sql.grouped(response.context["f"].period, group_sql)
    table = response.context["table"]
    assert len(table) == len(expected)
    for row in table:
        group = {"key": row.get("prefix"), "provider": row["filter"].get("provider")}.get(by, row["filter"].get(by))
        if by == "tier" and group == "none":
            group = ""
        want = expected[group or ""]
        assert row["figures"].requests == want["requests"], row["label"]
        assert row["figures"].total_tokens == want["total_tokens"]
        assert row["figures"].errors == want["errors"]
        assert float(row["figures"].cost_usd) == pytest.approx(want["cost_usd"], abs=1e-6)
    assert response.context["total"].requests == sum(g["requests"] for g in expected.values())


def test_breakdown_for_a_plain_user_lists_only_their_keys(client, traffic):
    response = _page(client, traffic.alice, "/usage/breakdown/?by=key&period=30d")
    shown = {row["key_id"] for row in response.context["table"]}
    assert shown and shown <= {k.id for k in traffic.alice_keys}
    assert traffic.bob_key.name not in response.content.decode()


@pytest.mark.parametrize(
    "column, p50_attr, p95_attr",
    [
        ("latency_ms", "latency_p50", "latency_p95"),
        ("ttft_ms", "ttft_p50", "ttft_p95"),
    ],
)
def test_latency_percentiles_fall_in_the_bucket_of_the_exact_sql_percentile(
    client, traffic, column, p50_attr, p95_attr
):
    response = _page(client, traffic.staff, "/usage/?period=30d")
    values = sql.column_values(response.context["f"].period, column)
    totals = response.context["totals"]
    for fraction, attr in ((0.5, p50_attr), (0.95, p95_attr)):
        lower, upper = sql.bucket_bounds(sql.exact_percentile(values, fraction))
        assert lower <= getattr(totals, attr) <= upper, (attr, getattr(totals, attr), lower, upper)


def test_saving_prices_each_alias_tokens_at_its_first_premium_route(client, traffic):
    response = _page(client, traffic.staff, "/usage/?period=30d")
    period = response.context["f"].period
    everything = sql.figures(period)
    # Both aliases' first premium route is gpt-4o-mini at $0.15 in / $0.60 out per million tokens.
    equivalent = (
        Decimal(everything["prompt_tokens"]) * Decimal("0.15")
        + Decimal(everything["completion_tokens"]) * Decimal("0.60")
    ) / Decimal(1_000_000)
    saving = response.context["saving"]
    assert float(saving.premium_equivalent_usd) == pytest.approx(float(equivalent), abs=1e-6)
    assert float(saving.saving_usd) == pytest.approx(float(equivalent) - everything["cost_usd"], abs=1e-6)
    assert saving.saving_usd > 0


def test_saving_ignores_aliases_without_a_premium_route(client, traffic):
    from routing.models import Route

    Route.objects.filter(alias__name="rainymodel/code", provider__tier="premium").delete()
    response = _page(client, traffic.staff, "/usage/?period=30d")
    auto = sql.figures(response.context["f"].period, ["alias = %s"], ["rainymodel/auto"])
    saving = response.context["saving"]
    assert float(saving.actual_usd) == pytest.approx(auto["cost_usd"], abs=1e-6)


def test_chart_series_split_the_totals_by_tier_and_show_the_free_share(client, traffic):
    response = _page(client, traffic.staff, "/usage/?period=7d")
    period = response.context["f"].period
    series = response.context["series"]
    for tier in ("free", "internal", "premium"):
        expected = sql.figures(period, ["tier = %s"], [tier])
        assert sum(series.requests[tier]) == expected["requests"]
        assert sum(series.cost[tier]) == pytest.approx(expected["cost_usd"], abs=1e-6)
    free = sql.figures(period, ["tier = %s"], ["free"])["requests"]
    everything = sql.figures(period)["requests"]
    assert _figure(response, "free-share") == f"{free / everything * 100:.0f}%"
    assert len(series.buckets) == 7 or len(series.buckets) == 8  # daily bars (a partial first day included)
    assert response.content.decode().count('class="tier-free"') >= 2  # drawn in both charts


def test_quota_consumption_counts_the_current_utc_day_and_month(client, traffic):
    from datetime import UTC, datetime

    key = traffic.alice_keys[0]
    response = _page(client, traffic.alice, f"/usage/keys/{key.id}/")
    quotas = {q["period"]: q for q in response.context["quotas"]}
    now = datetime.now(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    rows = [r for r in traffic.rows if r["api_key_id"] == key.id]
    day_requests = sum(1 for r in rows if r["created_at"] >= day_start)
    month_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows if r["created_at"] >= month_start)
    assert quotas["day"]["limits"][0]["label"] == "requests"
    assert quotas["day"]["limits"][0]["used"] == day_requests
    assert quotas["day"]["limits"][0]["limit"] == 50
    assert quotas["month"]["limits"][0]["used"] == month_tokens
    assert quotas["month"]["limits"][0]["percent"] == min(round(month_tokens / 100_000 * 100), 100)


def test_percentile_interpolates_inside_the_bucket_that_holds_the_rank():
    from usage.models import LATENCY_BUCKET_EDGES_MS, LATENCY_BUCKETS

    histogram = [0] * LATENCY_BUCKETS
    histogram[LATENCY_BUCKET_EDGES_MS.index(100) + 1] = 10  # ten requests between 100 and 150 ms
    assert percentile(histogram, 0.5) == pytest.approx(125)
    assert percentile(histogram, 1.0) == pytest.approx(150)
    assert percentile([0] * LATENCY_BUCKETS, 0.5) is None
    histogram = [0] * (LATENCY_BUCKETS - 1) + [4]  # all in the open-ended last bucket
    assert percentile(histogram, 0.95) == 60000
