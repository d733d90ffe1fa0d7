"""Self-service keys in a real browser at 1280 px: alice creates a key, copies it from the one page that shows it,
rotates it with a grace, and revokes it; screenshots of each new page go to tests/artifacts/."""

from __future__ import annotations

import pytest

from apikeys.keys import verify_key
from apikeys.models import APIKey, UserKeyCaps
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_alice_creates_rotates_and_revokes_her_key(page, users, screenshot):
    UserKeyCaps.objects.create(user=None, max_keys=3, max_rpm=60, max_rotation_grace_hours=24)
    sign_in(page, "alice", "alice-pass-123")
    page.goto("/usage/keys/")
    page.click("text=New key")
    page.wait_for_url("**/usage/keys/new/")
    page.fill("#id_name", "alice-laptop")
    page.fill("#id_rpm_limit", "90")
    screenshot(page, "key-create")
    page.click("button:has-text('Create key')")
    assert "cap: max_rpm" in page.locator(".errornote").inner_text()
    screenshot(page, "key-create-refused")
    page.fill("#id_rpm_limit", "30")
    page.click("button:has-text('Create key')")
    page.wait_for_url("**/secret/")
    full_key = page.locator("#new-key").inner_text().strip()
    api_key = APIKey.objects.get(name="alice-laptop")
    assert verify_key(full_key, api_key.hashed_key)
    screenshot(page, "key-secret")
    page.reload()
    assert page.locator("#new-key").count() == 0

    page.goto(f"/usage/keys/{api_key.id}/")
    page.click("a.button:has-text('Rotate')")
    page.fill("#id_grace_hours", "2")
    screenshot(page, "key-rotate")
    page.click("button:has-text('Rotate')")
    page.wait_for_url("**/secret/")
    rotated = page.locator("#new-key").inner_text().strip()
    assert rotated != full_key and "old secret keeps working" in page.content()

    page.goto(f"/usage/keys/{api_key.id}/")
    screenshot(page, "key-detail-rotated")
    page.click("a.button:has-text('Revoke')")
    screenshot(page, "key-revoke")
    page.click("button:has-text('Revoke key')")
    page.wait_for_url(f"**/usage/keys/{api_key.id}/")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    page.goto("/usage/keys/")
    screenshot(page, "keys-own")
