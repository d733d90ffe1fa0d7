"""The usage pages in a real browser: staff and a plain user sign in, open every page, and see the figures the
database holds — and a plain user never sees another user's key or rows."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.usage import sql
from usage.filters import parse_period

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _figure(page, name: str) -> str:
    return page.locator(f'[data-figure="{name}"]').inner_text().strip()


def test_staff_overview_shows_the_database_figures_and_tier_charts(page, traffic, screenshot):
    sign_in(page, "staff", "staff-pass-123")
    page.goto("/usage/?period=30d")
    expected = sql.figures(parse_period({"period": "30d"}))
    assert _figure(page, "requests") == f"{expected['requests']:,}"
    assert _figure(page, "tokens") == f"{expected['total_tokens']:,}"
    assert _figure(page, "error-rate") == f"{expected['errors'] / expected['requests'] * 100:.1f}%"
    free = sql.figures(parse_period({"period": "30d"}), ["tier = %s"], ["free"])["requests"]
    assert _figure(page, "free-share") == f"{free / expected['requests'] * 100:.0f}%"
    assert page.locator("svg rect.tier-free").count() > 0
    assert page.locator("svg rect.tier-premium").count() > 0
    screenshot(page, "overview-staff")


def test_staff_opens_breakdown_keys_key_and_log_pages(page, traffic, screenshot):
    sign_in(page, "staff", "staff-pass-123")
    period = parse_period({"period": "30d"})

    page.goto("/usage/breakdown/?by=key&period=30d")
    groups = sql.grouped(period, "key_prefix")
    assert page.locator("#breakdown tbody tr").count() == len(groups)
    bob = page.locator("#breakdown tbody tr", has_text="bob-server")
    assert bob.locator('[data-col="requests"]').inner_text() == f"{groups[traffic.bob_key.prefix]['requests']:,}"
    screenshot(page, "breakdown-by-key")

    page.goto("/usage/keys/?period=30d")
    assert page.locator("#keys tbody tr").count() == 3
    page.click("text=alice-laptop")
    page.wait_for_url(f"**/usage/keys/{traffic.alice_keys[0].id}/**")
    assert page.locator(".quota[data-period=day] meter").count() == 1
    assert page.locator(".quota[data-period=month] meter").count() == 1
    screenshot(page, "key-detail")

    page.goto("/usage/log/?period=30d")
    newest = max((r for r in traffic.rows if r["created_at"] >= period.start), key=lambda r: r["created_at"])
    assert page.locator("#log tbody tr").first.get_attribute("data-id") == newest["id"]
    assert page.locator("#log tbody tr").count() == 50
    page.click("text=Older →")
    assert page.locator("#log tbody tr").count() > 0
    screenshot(page, "log-staff")


def test_filter_form_narrows_the_overview_to_matching_rows(page, traffic):
    sign_in(page, "staff", "staff-pass-123")
    page.goto("/usage/?period=30d")
    page.select_option("select[name=tier]", "premium")
    page.check("input[name=errors]")
    page.click("text=Apply")
    page.wait_for_url("**tier=premium**")
    expected = sql.figures(parse_period({"period": "30d"}), ["tier = %s", "status >= 400"], ["premium"])
    assert _figure(page, "requests") == f"{expected['requests']:,}"


def test_editing_the_dates_switches_to_a_custom_period(page, traffic):
    from datetime import UTC, datetime, timedelta

    sign_in(page, "staff", "staff-pass-123")
    page.goto("/usage/?period=24h")
    start = (datetime.now(UTC) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    page.fill("input[name=start]", start.strftime("%Y-%m-%dT%H:%M"))
    page.dispatch_event("input[name=start]", "change")
    assert page.locator("input[name=period][value=custom]").is_checked()
    page.click("text=Apply")
    page.wait_for_url("**period=custom**")
    period = parse_period({"period": "custom", "start": start.isoformat(),
                           "end": page.input_value("input[name=end]")})
    assert _figure(page, "requests") == f"{sql.figures(period)['requests']:,}"


def test_a_plain_user_sees_only_their_own_keys_and_rows(page, traffic, screenshot):
    sign_in(page, "alice", "alice-pass-123")
    period = parse_period({"period": "30d"})
    ids = [k.id for k in traffic.alice_keys]
    page.goto("/usage/?period=30d")
    expected = sql.figures(period, ["api_key_id IN (%s, %s)"], ids)
    assert _figure(page, "requests") == f"{expected['requests']:,}"
    screenshot(page, "overview-plain-user")

    page.goto("/usage/keys/?period=30d")
    assert page.locator("#keys tbody tr").count() == 2
    assert "bob-server" not in page.content()

    page.goto("/usage/log/?period=30d")
    alice_rows = {r["id"] for r in traffic.rows if r["api_key_id"] in ids}
    shown = page.locator("#log tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown and set(shown) <= alice_rows
    screenshot(page, "log-plain-user")

    response = page.goto(f"/usage/keys/{traffic.bob_key.id}/")
    assert response.status == 404
    assert "bob-server" not in page.content()
    response = page.goto(f"/usage/log/?key={traffic.bob_key.id}")
    assert response.status == 404


def test_overview_and_log_are_readable_on_a_phone(phone, traffic, screenshot):
    sign_in(phone, "staff", "staff-pass-123")
    for url, name in (("/usage/?period=7d", "overview-phone"), ("/usage/log/", "log-phone")):
        phone.goto(url)
        # Nothing but the scrollable tables may be wider than the screen.
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"{url} is {width}px wide on a 390px screen"
        screenshot(phone, name)
    phone.goto("/usage/?period=7d")
    assert phone.locator(".card").first.is_visible()
