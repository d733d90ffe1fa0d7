"""The audit trail in a real browser at 1280 px: staff change a provider in the admin, then its History page shows
the change with who, where from and the field diff, and the list of all changes shows it beside the import that
created the configuration and a key's revocation.

Screenshots go to tests/artifacts/audit-*.png."""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def audited_world(django_user_model):
    from io import StringIO

    from django.core.management import call_command

    from apikeys.services import apikey_create, apikey_revoke
    from audit.history import acting

    django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True, is_superuser=True)
    call_command("routing", "load-defaults", "--actor", "deploy-bot", stdout=StringIO())
    with acting(source="apikey create", actor="ops (OS user deploy)"):
        api_key, _ = apikey_create(name="ci-runner", rpm_limit=60, quotas=[("day", "max_requests", 1000)])
    apikey_revoke(api_key=api_key)


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"audit-{name}.png"), full_page=True)


def test_a_change_made_in_the_admin_shows_on_the_history_page_and_in_all_changes(page, audited_world):
    from routing.models import Provider

    hf = Provider.objects.get(name="hf")
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-pass-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")

    page.goto(f"/admin/routing/provider/{hf.pk}/change/")
    page.fill("#id_max_retries", "5")
    page.fill("#id_request_timeout_s", "90")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist")

    page.click("a.historylink")
    page.wait_for_selector("#change-history")
    table = page.inner_text("#change-history")
    assert "Retries on the same route:" in table and "2" in table and "5" in table
    assert "staff" in table and "admin" in table
    assert "deploy-bot (OS user" in table and "routing load-defaults" in table
    shoot(page, "provider-history")

    page.click("#changes-link")
    page.wait_for_selector("#all-changes")
    listing = page.inner_text("#all-changes")
    first_row = listing.splitlines()[1]
    assert "hf" in first_row and "staff" in first_row
    assert "ci-runner" in listing and "apikey create" in listing
    shoot(page, "all-changes")
