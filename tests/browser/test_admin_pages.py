"""The admin in a real browser at 1280 px: staff sign in, open every list page (and the pages where the key
columns live in a form), and the columns an operator looks at first are on screen, not scrolled off to the right.

Screenshots go to tests/artifacts/admin-*.png."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1280


@pytest.fixture
def admin_world(django_user_model):
    """The shipped routing config, keys with limits and quotas (one used, one revoked), request-log rows with
    long ids and model names, and the ollama-primary route of rainymodel/code with its breaker open."""
    from apikeys.services import apikey_create, apikey_revoke
    from rainymodel_site.shared_state import state
    from routing import breakers
    from routing.config_file import import_file
    from routing.models import Route
    from tests.routing.conftest import DEFAULTS_FILE
    from usage.models import RequestLog

    django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True, is_superuser=True)
    import_file(str(DEFAULTS_FILE))
    laptop, _ = apikey_create(
        name="alice-laptop-with-a-long-name",
        rpm_limit=600,
        tpm_limit=2_000_000,
        max_concurrent=8,
        allowed_aliases=["rainymodel/chat", "rainymodel/code"],
        allowed_policies=["auto", "free"],
        quotas=[("day", "max_requests", 10_000), ("month", "max_cost_usd", 25)],
    )
    laptop.last_used_at = timezone.now()
    laptop.expires_at = timezone.now() + timedelta(days=90)
    laptop.save()
    old, _ = apikey_create(name="old-ci", quotas=[("month", "max_tokens", 5_000_000)])
    apikey_revoke(api_key=old)
    now = timezone.now()
    for i in range(30):
        failed = i % 4 == 0
        RequestLog.objects.create(
            id=f"{i:04d}a1b2c3d4-e5f6-4789-abcd-0123456789ab"[:40],
            created_at=now - timedelta(minutes=i),
            api_key=laptop,
            key_prefix=laptop.prefix,
            requested_model="rainymodel/code",
            alias="rainymodel/code",
            policy="auto",
            tier="free",
            provider="ollama-primary",
            upstream_model="qwen2.5-coder:32b-instruct-q4_K_M",
            status=502 if failed else 200,
            error_code="upstream_unavailable" if failed else "",
            stream=True,
            latency_ms=1234 + i * 10,
            ttft_ms=321,
            prompt_tokens=1500,
            completion_tokens=700,
            cost_usd="0.00123",
        )
    route = Route.objects.get(provider__name="ollama-primary", alias__name="rainymodel/code")
    state().set_sync(
        breakers.route_key(route.pk),
        breakers.encode(
            breakers.BreakerState(
                status=breakers.OPEN, failures=3, open_until=time.time() + 600, cooldown_s=600, last_reason="http_503"
            )
        ),
    )
    return laptop


def sign_in_admin(page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-pass-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


# The right edge of an element as the reader sees it: inside the viewport and not cut off by a scrolling ancestor
# (the admin's result table scrolls sideways inside its own box).
VISIBLE_RIGHT = """el => {
    let right = el.getBoundingClientRect().right, limit = window.innerWidth;
    for (let a = el.parentElement; a; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== "visible") limit = Math.min(limit, a.getBoundingClientRect().right);
    }
    return [right, limit];
}"""


def off_screen(page, *selectors: str) -> list[str]:
    """The selectors whose element is not rendered, or ends beyond the 1280 px viewport or outside the scrolling
    box it sits in."""
    problems = []
    for selector in selectors:
        element = page.locator(selector).first
        if element.count() == 0 or element.bounding_box() is None:
            problems.append(f"{page.url}: {selector} is not rendered")
            continue
        right, limit = element.evaluate(VISIBLE_RIGHT)
        if right > min(limit, WIDTH) + 0.5:
            problems.append(f"{page.url}: {selector} ends at {right:.0f} px, beyond {min(limit, WIDTH):.0f} px")
    return problems


def test_admin_list_pages_keep_their_key_columns_on_a_1280_px_screen(page, admin_world):
    problems = []
    sign_in_admin(page)
    # "View site" goes to the landing page, and the header links to the usage pages.
    assert page.locator("#user-tools a", has_text="View site").get_attribute("href") == "/"
    assert page.locator("#usage-link").get_attribute("href") == "/usage/"
    shoot(page, "index")

    page.goto("/admin/routing/provider/")
    shoot(page, "providers")
    problems += off_screen(page, "th.column-secret_set", "th.column-enabled", "th.column-breaker")
    ollama = page.locator("#result_list tr", has_text="ollama-primary")
    assert "closed · 1 route open" in ollama.locator("td.field-breaker").inner_text()

    page.goto("/admin/routing/alias/")
    shoot(page, "aliases")
    problems += off_screen(
        page, "th.column-enabled", "th.column-listed", "th.column-default_policy", "th.column-route_count"
    )

    page.click("#result_list a:text-is('rainymodel/code')")
    page.wait_for_selector(".inline-group")
    shoot(page, "alias-change")
    problems += off_screen(
        page,
        ".inline-group th.column-provider",
        ".inline-group th.column-enabled",
        ".inline-group th.column-breaker",
        ".inline-group th.column-context_window",
        ".inline-group th.column-input_price_per_mtok",
        ".inline-group th.column-output_price_per_mtok",
        ".inline-group thead th:last-child",
    )

    page.goto("/admin/routing/policy/")
    shoot(page, "policies")
    problems += off_screen(page, "th.column-tier_order", "th.column-is_default")

    page.goto("/admin/routing/routingsettings/")
    shoot(page, "settings")
    problems += off_screen(page, "#id_catch_all_alias")

    page.goto("/admin/apikeys/apikey/")
    shoot(page, "api-keys")
    problems += off_screen(
        page,
        "th.column-status",
        "th.column-limits",
        "th.column-quota_summary",
        "th.column-last_used",
        "th.column-expires",
    )

    page.goto(f"/admin/apikeys/apikey/{admin_world.pk}/change/")
    shoot(page, "api-key-change")
    problems += off_screen(page, "#revoke-key", "#id_allowed_aliases", "#id_allowed_policies", "#id_default_policy")
    assert page.locator("#id_allowed_aliases input[type=checkbox]:checked").count() == 2

    page.goto("/admin/usage/requestlog/")
    shoot(page, "request-log")
    problems += off_screen(
        page,
        "th.column-status_code",
        "th.column-error",
        "th.column-latency",
        "th.column-total_tokens",
        "th.column-cost",
        "th.column-key",
        "th.column-alias_name",
        "th.column-route",
    )
    assert not problems


def test_the_revoke_button_asks_then_revokes(page, admin_world):
    sign_in_admin(page)
    page.goto(f"/admin/apikeys/apikey/{admin_world.pk}/change/")
    page.click("#revoke-key")
    page.wait_for_url("**/revoke/")
    shoot(page, "api-key-revoke")
    admin_world.refresh_from_db()
    assert not admin_world.is_revoked  # the GET only asks
    page.click("#confirm-revoke")
    page.wait_for_url(f"**/admin/apikeys/apikey/{admin_world.pk}/change/")
    assert "revoked by staff" in page.locator(".messagelist").inner_text()
    assert page.locator("#revoke-key").count() == 0
    admin_world.refresh_from_db()
    assert admin_world.is_revoked


def test_a_key_added_in_the_browser_is_shown_once_and_never_kept_in_a_cookie(page, admin_world):
    sign_in_admin(page)
    page.goto("/admin/apikeys/apikey/add/")
    shoot(page, "api-key-add")
    page.fill("#id_name", "from-the-browser")
    page.check("#id_allowed_aliases input[value='rainymodel/chat']")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/apikeys/apikey/")
    full_key = page.locator("#new-api-key").inner_text().strip()
    assert full_key.startswith("rm-") and len(full_key) > 30
    shoot(page, "api-key-created")
    cookies = page.context.cookies()
    assert not any(full_key[12:] in cookie["value"] for cookie in cookies)
    page.reload()
    assert page.locator("#new-api-key").count() == 0
