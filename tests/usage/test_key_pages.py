"""Self-service key pages (docs/users.md): a signed-in user creates a key and sees it once, rotates and revokes
their own keys, is refused past their caps with the cap named, and gets 404 for anyone else's key. POSTs need CSRF."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.test import Client

from apikeys.keys import verify_key
from apikeys.models import APIKey, UserKeyCaps
from apikeys.services import apikey_create_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def users(users):
    """The usage tests' staff, alice and bob, by name."""
    staff, alice, bob = users
    return SimpleNamespace(staff=staff, alice=alice, bob=bob)


def _secret(response) -> str:
    match = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', response.content.decode())
    assert match, response.content.decode()
    return match.group(1)


def test_create_shows_the_full_key_once_server_side(client, users):
    client.force_login(users.alice)
    assert client.get("/usage/keys/new/").status_code == 200
    response = client.post("/usage/keys/new/", {"name": "laptop", "rpm_limit": "30"})
    assert response.status_code == 302
    api_key = APIKey.objects.get(owner=users.alice, name="laptop")
    assert response["Location"] == f"/usage/keys/{api_key.id}/secret/"
    assert all(api_key.prefix not in morsel.value for morsel in response.cookies.values())
    page = client.get(response["Location"])
    full_key = _secret(page)
    assert verify_key(full_key, api_key.hashed_key) and api_key.rpm_limit == 30
    assert page["Cache-Control"] == "no-store"
    assert full_key not in "".join(c.value for c in client.cookies.values())
    again = client.get(response["Location"])
    assert again.status_code == 200 and full_key not in again.content.decode()
    assert "shown once" in again.content.decode()


def test_duplicate_names_are_refused_with_a_clear_message(client, users):
    client.force_login(users.alice)
    apikey_create_for_user(user=users.alice, name="laptop")
    response = client.post("/usage/keys/new/", {"name": "laptop"})
    assert response.status_code == 400 and "already has a key with this name" in response.content.decode()
    assert APIKey.objects.filter(owner=users.alice).count() == 1


def test_caps_are_refused_naming_the_cap(client, users):
    UserKeyCaps.objects.create(user=None, max_keys=1, max_rpm=60)
    client.force_login(users.alice)
    response = client.post("/usage/keys/new/", {"name": "fast", "rpm_limit": "61"})
    assert response.status_code == 400 and "cap: max_rpm" in response.content.decode()
    assert client.post("/usage/keys/new/", {"name": "ok"}).status_code == 302
    assert APIKey.objects.get(owner=users.alice).rpm_limit == 60
    response = client.post("/usage/keys/new/", {"name": "second"})
    assert response.status_code == 400 and "cap: max_keys" in response.content.decode()


def test_rotate_keeps_the_row_and_shows_the_new_secret_once(client, users):
    api_key, old = apikey_create_for_user(user=users.alice, name="laptop")
    client.force_login(users.alice)
    assert client.get(f"/usage/keys/{api_key.id}/rotate/").status_code == 200
    response = client.post(f"/usage/keys/{api_key.id}/rotate/", {"grace_hours": "2"})
    assert response.status_code == 302
    new = _secret(client.get(response["Location"]))
    api_key.refresh_from_db()
    assert new != old and verify_key(new, api_key.hashed_key) and verify_key(old, api_key.previous_hashed_key)
    assert api_key.previous_valid_until is not None


def test_rotation_grace_past_the_cap_is_refused(client, users):
    UserKeyCaps.objects.create(user=None, max_rotation_grace_hours=1)
    api_key, _ = apikey_create_for_user(user=users.alice, name="laptop")
    client.force_login(users.alice)
    response = client.post(f"/usage/keys/{api_key.id}/rotate/", {"grace_hours": "1.5"})
    assert response.status_code == 400 and "cap: max_rotation_grace_hours" in response.content.decode()
    response = client.post(f"/usage/keys/{api_key.id}/rotate/", {"grace_hours": "-1"})
    assert response.status_code == 400


def test_revoke(client, users):
    api_key, _ = apikey_create_for_user(user=users.alice, name="laptop")
    client.force_login(users.alice)
    assert "Revoke key" in client.get(f"/usage/keys/{api_key.id}/revoke/").content.decode()
    assert client.post(f"/usage/keys/{api_key.id}/revoke/").status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert client.post(f"/usage/keys/{api_key.id}/rotate/", {"grace_hours": "1"}).status_code == 404


@pytest.mark.parametrize("action", ["secret", "rotate", "revoke"])
def test_another_users_key_is_404_for_every_action(client, users, action):
    bobs, _ = apikey_create_for_user(user=users.bob, name="bobs-key")
    for who in (users.alice, users.staff):  # staff manage other people's keys in the admin, not here
        client.force_login(who)
        assert client.get(f"/usage/keys/{bobs.id}/{action}/").status_code == 404
        response = client.post(f"/usage/keys/{bobs.id}/{action}/", {"grace_hours": "0"})
        assert response.status_code == 404 and b"bobs-key" not in response.content
    bobs.refresh_from_db()
    assert bobs.revoked_at is None and bobs.previous_valid_until is None


def test_posts_need_csrf(users):
    api_key, _ = apikey_create_for_user(user=users.alice, name="laptop")
    client = Client(enforce_csrf_checks=True)
    client.force_login(users.alice)
    assert client.post("/usage/keys/new/", {"name": "x"}).status_code == 403
    assert client.post(f"/usage/keys/{api_key.id}/revoke/").status_code == 403
    assert client.post(f"/usage/keys/{api_key.id}/rotate/", {"grace_hours": "1"}).status_code == 403
    api_key.refresh_from_db()
    assert api_key.revoked_at is None and APIKey.objects.count() == 1


def test_the_pages_are_throttled(client, users, settings):
    settings.RAINYMODEL_USAGE_PAGES_RATE = "2/m"
    client.force_login(users.alice)
    statuses = [client.post("/usage/keys/new/", {"name": f"k{i}"}).status_code for i in range(3)]
    assert statuses[-1] == 429 and APIKey.objects.filter(owner=users.alice).count() == 2


def test_anonymous_visitors_are_sent_to_sign_in(client):
    assert client.post("/usage/keys/new/", {"name": "x"}).status_code == 302
    assert APIKey.objects.count() == 0


def test_the_caps_admin_pages_render(client, users):
    UserKeyCaps.objects.create(user=users.alice, max_keys=3)
    client.force_login(users.staff)
    users.staff.is_superuser = True
    users.staff.save()
    assert client.get("/admin/apikeys/userkeycaps/").status_code == 200
    assert client.get("/admin/apikeys/userkeycaps/add/").status_code == 200
