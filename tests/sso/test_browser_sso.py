"""End to end: Chromium clicks "Sign in with Orcest", signs in at a real OpenID Connect provider and comes back
signed in to RainyModel (tests/sso/conftest.py starts the provider)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import ARTIFACTS, browser  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def page(browser, live_server, sso_settings):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"sso-{name}.png"), full_page=True)


def provider_sign_in(page, username: str, password: str) -> None:
    page.wait_for_selector("text=Orcest Login")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def test_sign_in_with_orcest_lands_on_usage_as_that_user(page, sso_settings):
    page.goto("/usage/")
    assert "/accounts/login/" in page.url
    shot(page, "login")
    page.click("#orcest-sso")
    provider_sign_in(page, "alice", "alice-pass-123")
    page.wait_for_url("**/usage/")
    shot(page, "usage-after-sso")
    user = get_user_model().objects.get(email="alice@example.test")
    assert user.username.startswith("orcest:")
    assert user.first_name == "Alice"
    assert not user.is_staff and not user.has_usable_password()
    # Not staff: the admin sends alice back to its sign-in page.
    page.goto("/admin/")
    assert "/admin/login/" in page.url


def test_staff_group_user_reaches_the_admin_and_logout_ends_both_sessions(page, sso_settings):
    page.goto("/admin/")
    assert "/admin/login/" in page.url
    shot(page, "admin-login")
    page.click("#orcest-sso")
    provider_sign_in(page, "bob", "bob-pass-123")
    page.wait_for_url("**/admin/")
    shot(page, "admin-after-sso")
    assert page.locator("#site-name").count() == 1
    user = get_user_model().objects.get(email="bob@example.test")
    assert user.is_staff and not user.is_superuser

    # The header's "Log out" ends ours and, through its end_session_endpoint, the provider's session.
    page.goto("/usage/")
    page.click("#logout-form button")
    page.wait_for_url("**/accounts/login/**")
    page.goto("/usage/")
    assert "/accounts/login/" in page.url
    page.click("#orcest-sso")
    # The provider asks for the password again: its session ended too.
    page.wait_for_selector("text=Orcest Login")
    shot(page, "provider-after-logout")
