"""The sign-in pages in Chromium: a wrong password and then too many failed sign-ins say so on the page."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def low_limits(settings):
    from django.core.cache import cache

    settings.RAINYMODEL_LOGIN_FAILURES_PER_IP = "3/h"
    cache.clear()  # every browser sign-in comes from 127.0.0.1: start each test with no failures counted


def attempt(page, path, username, password):
    page.goto(path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_load_state()


@pytest.mark.parametrize("path,name", [("/accounts/login/", "usage"), ("/admin/login/", "admin")])
def test_sign_in_page_says_wrong_password_then_too_many_attempts(page, screenshot, path, name, django_user_model):
    django_user_model.objects.create_user("ops", password="right-password-1", is_staff=True)
    attempt(page, path, "ops", "wrong")
    assert "username and password" in page.locator(".errornote").last.inner_text()
    screenshot(page, f"login-{name}-wrong-password")
    for _ in range(2):
        attempt(page, path, "ops", "wrong")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        attempt(page, path, "ops", "right-password-1")
    assert posted.value.status == 429
    assert "Too many failed sign-in attempts. Try again in" in page.locator(".errornote").first.inner_text()
    screenshot(page, f"login-{name}-throttled")
