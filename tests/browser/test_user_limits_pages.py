"""A user's limits (issue 14) in a real browser: staff add them in the admin (with a quota inline), and the user
sees them, with this period's use, on their keys page. Screenshots: tests/artifacts/usage-user-limits-*.png."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_set_a_users_limits_in_the_admin_and_the_user_sees_them(page, traffic, screenshot):
    from apikeys.models import UserLimits

    traffic.staff.is_superuser = True
    traffic.staff.save()
    sign_in(page, "staff", "staff-pass-123")
    page.goto("/admin/apikeys/userlimits/add/")
    page.click(".select2-selection")  # the user is picked by name (autocomplete), not from a list of every user
    page.fill(".select2-search__field", "alice")
    page.click(".select2-results__option >> text=alice")
    page.fill("#id_rpm_limit", "120")
    page.fill("#id_max_concurrent", "4")
    page.click("text=Add another user quota")
    page.select_option("#id_quotas-0-period", "day")
    page.fill("#id_quotas-0-max_requests", "500")
    page.fill("#id_quotas-0-max_cost_usd", "2.5")
    screenshot(page, "user-limits-admin-add")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/apikeys/userlimits/")
    assert page.locator("#result_list tbody tr").count() == 1
    assert "500 requests/day" in page.locator("#result_list").inner_text()
    screenshot(page, "user-limits-admin-list")
    limits = UserLimits.objects.get(user=traffic.alice)
    assert (limits.rpm_limit, limits.max_concurrent, limits.quotas.get().max_requests) == (120, 4, 500)

    page.context.clear_cookies()
    sign_in(page, "alice", "alice-pass-123")
    page.goto("/usage/keys/")
    block = page.locator("#user-limits")
    assert "120 requests/min" in block.inner_text() and "4 at a time" in block.inner_text()
    assert block.locator(".quota[data-period=day] meter").count() == 2  # requests and cost
    screenshot(page, "user-limits-keys-page")
