"""Single sign-on is off unless configured; claims map to users and to staff/superuser; an unreachable provider is
a clear 503."""

from __future__ import annotations

import socket

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import override_settings

from rainymodel_site import sso
from rainymodel_site.sso import OrcestBackend

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_unset_issuer_means_password_login_only(client, url):
    page = client.get(url)
    assert page.status_code == 200
    assert b"Sign in with Orcest" not in page.content
    assert b'name="password"' in page.content


@pytest.mark.parametrize("url", ["/oidc/authenticate/", "/oidc/callback/", "/oidc/logout/"])
def test_unset_issuer_hides_the_oidc_views(client, url):
    assert client.get(url).status_code == 404


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_provider_is_a_clear_503_and_the_password_form_stays(client):
    sso._discovery.clear()
    with override_settings(RAINYMODEL_OIDC_ISSUER=f"http://127.0.0.1:{_closed_port()}", OIDC_RP_CLIENT_ID="x"):
        login = client.get("/accounts/login/")
        assert b"Sign in with Orcest" in login.content and b'name="password"' in login.content
        response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert b"cannot be reached" in response.content


@override_settings(RAINYMODEL_OIDC_STAFF_GROUPS=["ops"], RAINYMODEL_OIDC_SUPERUSER_GROUPS=["root"])
def test_groups_map_to_staff_and_superuser_at_every_sign_in():
    backend = OrcestBackend.__new__(OrcestBackend)  # no endpoints needed for the claim mapping
    backend.UserModel = get_user_model()
    claims = {"sub": "s-1", "email": "c@example.test", "name": "Carol", "groups": ["ops"]}
    user = backend.create_user(claims)
    assert user.username == "orcest:s-1" and user.email == "c@example.test" and user.first_name == "Carol"
    assert user.is_staff and not user.is_superuser and not user.has_usable_password()

    ops = Group.objects.create(name="ops")  # a local group named like the provider's: its permissions apply
    user = backend.update_user(user, claims)
    assert list(user.groups.all()) == [ops]

    user = backend.update_user(user, {**claims, "groups": ["root"]})
    assert not user.groups.exists()
    assert user.is_staff and user.is_superuser

    user = backend.update_user(user, {**claims, "groups": []})  # removed from the groups at the provider
    user.refresh_from_db()
    assert not user.is_staff and not user.is_superuser


def test_the_provider_cannot_pick_a_local_account():
    get_user_model().objects.create_user("admin", password="x-local-pass-1", is_staff=True)
    backend = OrcestBackend.__new__(OrcestBackend)
    backend.UserModel = get_user_model()
    assert not backend.filter_users_by_claims({"sub": "admin", "preferred_username": "admin"}).exists()
    assert sso.username_for("x" * 200).startswith("orcest:") and len(sso.username_for("x" * 200)) <= 150


def test_an_unreachable_provider_does_not_break_password_sign_in_or_signed_in_sessions(client):
    get_user_model().objects.create_user("dora", password="dora-local-pass-1")
    sso._discovery.clear()
    with override_settings(
        RAINYMODEL_OIDC_ISSUER=f"http://127.0.0.1:{_closed_port()}",
        OIDC_RP_CLIENT_ID="x",
        AUTHENTICATION_BACKENDS=["rainymodel_site.sso.OrcestBackend", "django.contrib.auth.backends.ModelBackend"],
    ):
        response = client.post("/accounts/login/", {"username": "dora", "password": "dora-local-pass-1"})
        assert response.status_code == 302 and response["Location"] == "/usage/"
        assert client.get("/usage/").status_code == 200
