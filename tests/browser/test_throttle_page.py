"""The usage pages' 429 page (usage/throttle.py) in a real browser: styled like the site's other error pages."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_past_the_page_rate_sees_the_styled_429_page(page, users, settings, screenshot):
    settings.RAINYMODEL_USAGE_PAGES_RATE = "2/m"
    sign_in(page, "alice", "alice-pass-123")  # the overview after sign-in is the first page
    page.goto("/usage/keys/")
    response = page.goto("/usage/log/")
    assert response.status == 429
    assert page.locator(".error-box h1").inner_text() == "Slow down a little"
    assert "Try again in" in page.locator(".error-box").inner_text()
    assert page.locator("link[rel=stylesheet]").count() > 0
    screenshot(page, "throttled-429")
