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
    period = parse_period({"period": "custom", "start": start.isoformat(), "end": page.input_value("input[name=end]")})
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
    row = traffic.rows[0]["id"]
    for url, name in (
        ("/usage/?period=7d", "overview-phone"),
        ("/usage/log/", "log-phone"),
        (f"/usage/log/{row}/", "log-row-phone"),
        ("/", "landing-phone"),
    ):
        phone.goto(url)
        # Nothing but the scrollable tables may be wider than the screen.
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"{url} is {width}px wide on a 390px screen"
        screenshot(phone, name)
    phone.goto("/usage/?period=7d")
    assert phone.locator(".card").first.is_visible()


# Every page, as staff and as a plain user, at 1280 px: screenshots to look at, and the columns that matter.
LOG_COLUMNS = ("Time (UTC)", "Endpoint", "Key", "Alias", "Policy", "Route", "Status", "Error code", "Tokens", "Cost")


def _headers(page, table: str) -> list[str]:
    # textContent, not innerText: the admin's CSS prints headers in capitals.
    return [h.strip() for h in page.locator(f"#{table} thead th").all_text_contents()]


def _visible(page, selector: str) -> None:
    assert page.locator(selector).first.is_visible(), selector


def _explained_row(traffic) -> dict:
    """A 429 of alice's key, logged with the attempts the proxy records, to open in the browser."""
    from django.utils import timezone

    from tests.usage.conftest import make_row, write

    row = make_row(
        created_at=timezone.now(),
        api_key=traffic.alice_keys[0],
        tier="",
        status=429,
        error_code="quota_exceeded",
        prompt_tokens=0,
        completion_tokens=0,
    )
    row["provider"] = row["upstream_model"] = ""
    failed = make_row(
        created_at=timezone.now(),
        api_key=traffic.alice_keys[0],
        tier="premium",
        status=200,
        fallback=True,
        prompt_tokens=1200,
        completion_tokens=300,
        latency_ms=2300,
        ttft_ms=450,
    )
    failed["attempts"] = [
        {"provider": "hf", "upstream_model": "llama-70b", "outcome": "http_503", "status": 503, "ms": 35},
        {
            "provider": "hf",
            "upstream_model": "llama-70b",
            "outcome": "timeout",
            "status": None,
            "ms": 30000,
            "detail": "no first token in 30 s",
        },
        {"provider": "openrouter", "upstream_model": "gpt-4o-mini", "outcome": "ok", "status": 200, "ms": 2250},
    ]
    write([row, failed])
    return {"quota": row, "fallback": failed}


@pytest.mark.parametrize("who", ["staff", "plain"])
def test_every_page_at_1280px_shows_its_key_columns(page, traffic, screenshot, who):
    rows = _explained_row(traffic)
    username = "staff" if who == "staff" else "alice"
    sign_in(page, username, f"{username}-pass-123")
    key = traffic.alice_keys[0]

    page.goto("/usage/?period=30d")
    for figure in ("requests", "tokens", "cost", "free-share", "error-rate"):
        _visible(page, f'[data-figure="{figure}"]')
    _visible(page, "figure.usage-chart svg rect")
    screenshot(page, f"overview-{who}")

    page.goto("/usage/breakdown/?by=alias&period=30d")
    assert _headers(page, "breakdown")[:4] == ["alias", "Requests", "Tokens", "Cost"]
    _visible(page, '#breakdown tbody [data-col="cost"]')
    screenshot(page, f"breakdown-{who}")

    page.goto("/usage/keys/?period=30d")
    assert {"Key", "Prefix", "State", "Requests", "Cost"} <= set(_headers(page, "keys"))
    assert ("Owner" in _headers(page, "keys")) == (who == "staff")
    screenshot(page, f"keys-{who}")

    page.goto(f"/usage/keys/{key.id}/?period=30d")
    _visible(page, ".quota meter")
    _visible(page, "figure.usage-chart svg")
    screenshot(page, f"key-detail-{who}")

    page.goto("/usage/log/?period=24h")
    assert set(LOG_COLUMNS) <= set(_headers(page, "log"))
    quota_row = page.locator(f'#log tbody tr[data-id="{rows["quota"]["id"]}"]')
    assert quota_row.locator('[data-col="error-code"]').inner_text() == "quota_exceeded"
    _visible(page, '#log thead th:has-text("Error code")')
    # Every column fits at 1280 px: nothing of the log hides behind the sideways scroll.
    assert page.evaluate("document.querySelector('#log').parentElement.scrollWidth") <= page.evaluate(
        "document.querySelector('#log').parentElement.clientWidth"
    )
    screenshot(page, f"log-{who}")

    # A click anywhere on the row (here: its status cell) opens the row's page.
    # (A real mouse click: Playwright's own click refuses a cell that the row's link covers, which is the point.)
    box = quota_row.locator('[data-col="status"]').bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"**/usage/log/{rows['quota']['id']}/**")
    assert page.locator('[data-field="error-code"]').inner_text() == "quota_exceeded"
    assert "quota" in page.locator('[data-field="explanation"]').inner_text()
    screenshot(page, f"log-row-429-{who}")
    page.goto(f"/usage/log/{rows['fallback']['id']}/")
    assert page.locator("#attempts tbody tr").count() == 3
    _visible(page, '#attempts td:has-text("upstream unavailable: HTTP 503 (retried)")')
    screenshot(page, f"log-row-fallback-{who}")

    response = page.goto(f"/usage/keys/{traffic.bob_key.id}/" if who == "plain" else "/usage/no-such-page/")
    assert response.status == 404
    _visible(page, "h1:has-text('Page not found')")
    screenshot(page, f"404-{who}")

    page.goto("/")
    _visible(page, "#base-url")
    assert page.locator("#base-url").inner_text() == page.url.rstrip("/") + "/v1"
    screenshot(page, f"landing-{who}")
    favicon = page.request.get("/favicon.ico")
    assert favicon.ok and favicon.headers["content-type"] == "image/svg+xml"


def test_the_log_and_breakdown_split_by_endpoint_at_1280px(page, traffic, screenshot):
    from django.utils import timezone

    from tests.usage.conftest import make_row, write

    write(
        [
            make_row(
                created_at=timezone.now(),
                api_key=traffic.bob_key,
                endpoint="embeddings",
                prompt_tokens=800,
                completion_tokens=0,
            )
            for _ in range(3)
        ]
    )
    sign_in(page, "staff", "staff-pass-123")
    page.goto("/usage/log/?period=24h")
    page.select_option('select[name="endpoint"]', "embeddings")
    page.click("text=Apply")
    page.wait_for_url("**endpoint=embeddings**")
    cells = page.locator('#log tbody [data-col="endpoint"]').all_inner_texts()
    assert cells == ["embeddings"] * 3
    assert page.evaluate("document.querySelector('#log').parentElement.scrollWidth") <= page.evaluate(
        "document.querySelector('#log').parentElement.clientWidth"
    )
    screenshot(page, "log-endpoint-embeddings")

    page.goto("/usage/breakdown/?by=endpoint&period=24h")
    groups = {r.get_attribute("data-group") for r in page.locator("#breakdown tbody tr").all()}
    assert groups == {"chat", "embeddings"}
    screenshot(page, "breakdown-by-endpoint")


def test_charts_with_tiny_zero_and_large_numbers(page, users, api_key, premium_routes, screenshot):
    """Three keys: a few requests that cost fractions of a cent, free requests that cost $0, and a busy key."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.usage.conftest import make_row, write

    staff, alice, _ = users
    tiny, _ = api_key(name="tiny", owner=alice)
    free, _ = api_key(name="free-only", owner=alice)
    busy, _ = api_key(name="busy", owner=alice)
    now = timezone.now()
    rows = [
        make_row(
            created_at=now - timedelta(hours=h), api_key=tiny, tier="premium", prompt_tokens=300, completion_tokens=100
        )
        for h in (0, 1, 1, 3, 5, 5, 5)
    ]
    rows += [make_row(created_at=now - timedelta(hours=h), api_key=free, tier="free") for h in (0, 2, 4)]
    rows += [
        make_row(
            created_at=now - timedelta(hours=h % 20, minutes=h % 50),
            api_key=busy,
            tier=("free", "internal", "premium")[h % 3],
            prompt_tokens=200_000,
            completion_tokens=50_000,
        )
        for h in range(1500)
    ]
    write(rows)
    sign_in(page, "staff", "staff-pass-123")

    def axis(chart: int) -> list[str]:
        ticks = page.locator("figure.usage-chart").nth(chart).locator("text.tick[text-anchor=end]")
        return ticks.evaluate_all("texts => texts.map(t => t.textContent)")

    page.goto(f"/usage/keys/{tiny.id}/?period=24h")
    assert axis(0) == ["0", "1", "2", "3"]  # at most 3 requests in an hour
    cost_ticks = axis(1)
    assert len(set(cost_ticks)) == len(cost_ticks) and cost_ticks[0] == "$0" and "$0.0001" in cost_ticks
    screenshot(page, "chart-tiny")

    page.goto(f"/usage/keys/{free.id}/?period=24h")
    charts = page.locator("figure.usage-chart").evaluate_all("figures => figures.map(f => f.textContent)")
    assert "Cost was $0 for the 3 requests in this period" in charts[1]
    assert "No requests" not in charts[0] + charts[1]
    screenshot(page, "chart-zero-cost")

    page.goto(f"/usage/keys/{busy.id}/?period=24h")
    counts = axis(0)
    assert counts[0] == "0" and all(int(t.replace(",", "")) % 10 == 0 for t in counts)
    assert all(t.startswith("$") for t in axis(1))
    screenshot(page, "chart-large")

    empty, _ = api_key(name="silent", owner=alice)
    page.goto(f"/usage/keys/{empty.id}/?period=24h")
    empties = page.locator("figure.usage-chart text.empty").evaluate_all("texts => texts.map(t => t.textContent)")
    assert empties == ["No requests in this period"] * 2
    screenshot(page, "chart-empty")
