"""The admin is where staff work (issue 2): every page renders for staff and is refused to anyone else; provider
secrets are never shown; a new API key is shown exactly once; the request log is read-only."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from apikeys.keys import hash_key
from apikeys.models import APIKey
from apikeys.services import apikey_create
from routing.config_file import import_file
from routing.models import Alias, ConfigVersion, Policy, Provider, Route
from usage.models import RequestLog

from .routing.conftest import DEFAULTS_FILE

KEY = re.compile(r"rm-[A-Za-z0-9_-]{32,}")


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def configured(db):
    import_file(str(DEFAULTS_FILE))
    api_key, _ = apikey_create(name="laptop", quotas=[("day", "max_requests", 100)])
    RequestLog.objects.create(id="req-1", status=200, key_prefix=api_key.prefix, provider="hf", tier="free",
                              alias="rainymodel/auto", attempts=[{"provider": "hf", "outcome": "ok"}])
    return api_key


def registered_models():
    return list(admin.site._registry)


def test_the_site_header_names_rainymodel(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "RainyModel administration" in response.text


def test_config_version_is_not_in_the_admin():
    assert ConfigVersion not in admin.site._registry


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m.__name__)
def test_every_changelist_and_add_page_renders_for_staff(admin_client, configured, model):
    response = admin_client.get(admin_url(model, "changelist"), follow=True)
    assert response.status_code == 200
    model_admin = admin.site._registry[model]
    request = response.wsgi_request
    if model_admin.has_add_permission(request):
        assert admin_client.get(admin_url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", [Provider, Alias, Policy, APIKey, RequestLog], ids=lambda m: m.__name__)
def test_every_change_page_renders_for_staff(admin_client, configured, model):
    obj = model.objects.first()
    assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m.__name__)
def test_anonymous_and_non_staff_users_are_sent_to_login(client, db, model):
    login = reverse("admin:login")
    url = admin_url(model, "changelist")
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(login)
    user = get_user_model().objects.create_user("visitor", password="pw-for-tests-only")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(login)


def test_provider_list_shows_whether_the_secret_is_set_never_its_value(admin_client, configured, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_value_that_must_never_appear")
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    response = admin_client.get(admin_url(Provider, "changelist"))
    assert "secret set" in response.text.lower()
    rows = {name: row for name, row in re.findall(r'field-name[^>]*><a [^>]*>([\w-]+)</a>(.*?)</tr>', response.text,
                                                  re.S)}
    assert 'alt="True"' in rows["hf"]
    assert 'alt="False"' in rows["openrouter"]
    assert "hf_value_that_must_never_appear" not in response.text
    page = admin_client.get(admin_url(Provider, "change", Provider.objects.get(name="hf").pk))
    assert "HF_TOKEN is set in this server" in page.text
    assert "hf_value_that_must_never_appear" not in page.text


def test_alias_page_lists_its_routes_in_position_order(admin_client, db):
    hf = Provider.objects.create(name="hf", kind="hf", tier="free", base_url="https://h/v1")
    alias = Alias.objects.create(name="rainymodel/auto")
    for position, model in [(2, "third-model"), (0, "first-model"), (1, "second-model")]:
        Route.objects.create(alias=alias, provider=hf, upstream_model=model, position=position)
    page = admin_client.get(admin_url(Alias, "change", alias.pk)).text
    assert page.index("first-model") < page.index("second-model") < page.index("third-model")


def test_a_policy_is_created_from_comma_separated_tiers(admin_client, db):
    response = admin_client.post(admin_url(Policy, "add"), {"name": "cheap", "tiers": "free, internal",
                                                            "description": ""})
    assert response.status_code == 302
    assert Policy.objects.get(name="cheap").tiers == ["free", "internal"]
    response = admin_client.post(admin_url(Policy, "add"), {"name": "bad", "tiers": "free, gold"})
    assert "Unknown tier(s) [&#x27;gold&#x27;]" in response.text or "Unknown tier(s) ['gold']" in response.text


def add_key(admin_client, **fields):
    data = {"name": "from-admin", "allowed_aliases": "", "allowed_policies": "",
            "quotas-TOTAL_FORMS": "1", "quotas-INITIAL_FORMS": "0", "quotas-MIN_NUM_FORMS": "0",
            "quotas-MAX_NUM_FORMS": "1000", "quotas-0-period": "day", "quotas-0-max_requests": "500"}
    data.update(fields)
    return admin_client.post(admin_url(APIKey, "add"), data, follow=True)


def test_a_new_key_is_shown_exactly_once(admin_client, db):
    response = add_key(admin_client)
    assert response.status_code == 200
    shown = KEY.findall(response.text)
    assert len(shown) == 1
    full_key = shown[0]
    api_key = APIKey.objects.get(name="from-admin")
    assert api_key.prefix == full_key[:12] and api_key.hashed_key == hash_key(full_key)
    assert api_key.quotas.get().max_requests == 500
    for url in (admin_url(APIKey, "changelist"), admin_url(APIKey, "change", api_key.pk)):
        page = admin_client.get(url).text
        assert full_key not in page
        assert api_key.prefix in page


def test_the_key_form_refuses_unknown_alias_names(admin_client, db):
    response = add_key(admin_client, allowed_aliases="rainymodel/nope")
    assert "No alias named" in response.text
    assert not APIKey.objects.exists()


def test_revoke_action_revokes_the_selected_keys(admin_client, db):
    first, _ = apikey_create(name="one")
    second, _ = apikey_create(name="two")
    response = admin_client.post(admin_url(APIKey, "changelist"),
                                 {"action": "revoke_keys", "_selected_action": [first.pk]}, follow=True)
    assert "Revoked 1 key(s)" in response.text
    assert APIKey.objects.get(pk=first.pk).is_revoked
    assert not APIKey.objects.get(pk=second.pk).is_revoked


def test_request_log_cannot_be_added_changed_or_deleted(admin_client, configured):
    row = RequestLog.objects.get()
    assert admin_client.get(admin_url(RequestLog, "add")).status_code == 403
    assert admin_client.post(admin_url(RequestLog, "delete", row.pk), {"post": "yes"}).status_code == 403
    detail = admin_client.get(admin_url(RequestLog, "change", row.pk)).text
    assert 'name="_save"' not in detail
    listing = admin_client.get(admin_url(RequestLog, "changelist")).text
    assert "delete_selected" not in listing
    assert RequestLog.objects.filter(pk=row.pk).exists()


def test_request_log_filters_and_search(admin_client, configured):
    listing = admin_client.get(admin_url(RequestLog, "changelist")).text
    for title in ("status", "tier", "provider", "alias", "policy", "stream", "created at"):
        assert f"By {title}" in listing
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?q=req-1").text
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?provider=hf&tier=free").text
    assert "req-1" not in admin_client.get(admin_url(RequestLog, "changelist") + "?status_class=errors").text
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?status_class=2").text
    assert "req-1" not in admin_client.get(admin_url(RequestLog, "changelist") + "?q=other").text
