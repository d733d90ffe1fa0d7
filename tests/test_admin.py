"""The admin is where staff work (issue 2): every page renders for staff and is refused to anyone else; provider
secrets are never shown; a new API key is shown exactly once; the request log is read-only."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from apikeys.keys import hash_key
from apikeys.models import APIKey, Quota
from apikeys.services import apikey_create
from routing.config_file import import_file
from routing.models import Alias, ConfigVersion, Policy, Provider, Route, RoutingSettings
from usage.models import RequestLog

from .routing.conftest import DEFAULTS_FILE

KEY = re.compile(r"rm-[A-Za-z0-9_-]{32,}")


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def configured(db):
    import_file(str(DEFAULTS_FILE))
    api_key, _ = apikey_create(name="laptop", quotas=[("day", "max_requests", 100)])
    RequestLog.objects.create(
        id="req-1",
        status=200,
        key_prefix=api_key.prefix,
        provider="hf",
        tier="free",
        alias="rainymodel/auto",
        attempts=[{"provider": "hf", "outcome": "ok"}],
    )
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
    rows = {
        name: row for name, row in re.findall(r"field-name[^>]*><a [^>]*>([\w-]+)</a>(.*?)</tr>", response.text, re.S)
    }
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
    response = admin_client.post(
        admin_url(Policy, "add"), {"name": "cheap", "tiers": "free, internal", "description": ""}
    )
    assert response.status_code == 302
    assert Policy.objects.get(name="cheap").tiers == ["free", "internal"]
    response = admin_client.post(admin_url(Policy, "add"), {"name": "bad", "tiers": "free, gold"})
    assert "Unknown tier(s) [&#x27;gold&#x27;]" in response.text or "Unknown tier(s) ['gold']" in response.text


def add_key(admin_client, follow=True, **fields):
    data = {
        "name": "from-admin",
        "quotas-TOTAL_FORMS": "1",
        "quotas-INITIAL_FORMS": "0",
        "quotas-MIN_NUM_FORMS": "0",
        "quotas-MAX_NUM_FORMS": "1000",
        "quotas-0-period": "day",
        "quotas-0-max_requests": "500",
    }
    data.update(fields)
    return admin_client.post(admin_url(APIKey, "add"), data, follow=follow)


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
    response = admin_client.post(
        admin_url(APIKey, "changelist"), {"action": "revoke_keys", "_selected_action": [first.pk]}, follow=True
    )
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
    for title in ("status", "endpoint", "tier", "provider", "alias", "policy", "stream", "created at"):
        assert f"By {title}" in listing
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?q=req-1").text
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?provider=hf&tier=free").text
    assert "req-1" not in admin_client.get(admin_url(RequestLog, "changelist") + "?status_class=errors").text
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?status_class=2").text
    assert "req-1" not in admin_client.get(admin_url(RequestLog, "changelist") + "?q=other").text
    assert "req-1" in admin_client.get(admin_url(RequestLog, "changelist") + "?endpoint=chat").text
    assert "req-1" not in admin_client.get(admin_url(RequestLog, "changelist") + "?endpoint=embeddings").text


# --- Issue 9: what operators look at first ----------------------------------------------------------------------

LABELLED_MODELS = [Provider, Alias, Route, Policy, RoutingSettings, APIKey, Quota]
CODE_WORDS = re.compile(r"\b(rpm|tpm|ttft|usd|env|mtok|max|is|ms|url|api)\b|_| s$")


@pytest.mark.parametrize("model", LABELLED_MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_human_label_and_help_text(model):
    for field in model._meta.get_fields():
        if not field.concrete or field.primary_key:
            continue
        # Django's default label is the attribute name with spaces, which reads as code: "rpm limit", "api key env",
        # "connect timeout s", "input price per mtok", "max cost usd", "is default".
        assert not CODE_WORDS.search(field.verbose_name), f"{model.__name__}.{field.name}: {field.verbose_name!r}"
        if field.editable and not (model is Quota and field.name == "api_key"):
            assert field.help_text, f"{model.__name__}.{field.name} has no help text"


def test_forms_show_the_human_labels(admin_client, configured):
    key_page = admin_client.get(admin_url(APIKey, "change", configured.pk)).text
    for label in ("Requests per minute", "Tokens per minute", "Requests at once", "Allowed aliases"):
        assert f"{label}:" in key_page
    assert "Rpm limit" not in key_page and "Max concurrent" not in key_page
    provider_page = admin_client.get(admin_url(Provider, "change", Provider.objects.get(name="hf").pk)).text
    assert "Secret&#x27;s environment variable:</label>" in provider_page
    assert "Api key env" not in provider_page


def test_the_admin_header_links_to_the_usage_pages_and_view_site_goes_home(admin_client, db):
    page = admin_client.get(reverse("admin:index")).text
    assert f'<a href="{reverse("usage-overview")}" id="usage-link">Usage</a>' in page
    assert '<a href="/">View site</a>' in page
    assert "static/rainymodel/admin.css" in page


def _set_breaker(key, status, open_for_s):
    import time

    from rainymodel_site.shared_state import state
    from routing import breakers

    state().set_sync(
        key,
        breakers.encode(
            breakers.BreakerState(
                status=status, failures=3, open_until=time.time() + open_for_s, cooldown_s=60, last_reason="http_503"
            )
        ),
    )


def _provider_breaker_cell(admin_client, name):
    listing = admin_client.get(admin_url(Provider, "changelist")).text
    rows = dict(re.findall(r'field-name[^>]*><a [^>]*>([\w-]+)</a>.*?field-breaker">(.*?)</td>', listing, re.S))
    return rows[name]


def test_provider_list_counts_its_routes_open_breakers(admin_client, configured):
    from routing import breakers

    routes = list(Route.objects.filter(provider__name="ollama-primary").values_list("pk", flat=True))
    assert _provider_breaker_cell(admin_client, "ollama-primary") == "closed"
    _set_breaker(breakers.route_key(routes[0]), breakers.OPEN, 60)
    assert _provider_breaker_cell(admin_client, "ollama-primary") == "closed · 1 route open"
    _set_breaker(breakers.route_key(routes[1]), breakers.OPEN, 60)
    _set_breaker(breakers.route_key(routes[2]), breakers.OPEN, -1)  # past its cooldown: half-open
    assert _provider_breaker_cell(admin_client, "ollama-primary") == "closed · 2 routes open · 1 route half-open"
    assert _provider_breaker_cell(admin_client, "hf") == "closed"


def test_request_log_list_shows_a_short_id_with_the_full_id_as_tooltip(admin_client, configured):
    RequestLog.objects.create(
        id="0123456789abcdef-long-request-id",
        status=502,
        error_code="upstream_unavailable",
        latency_ms=1234,
        provider="hf",
        tier="free",
        upstream_model="qwen",
    )
    listing = admin_client.get(admin_url(RequestLog, "changelist")).text
    assert '<span title="0123456789abcdef-long-request-id">01234567…</span>' in listing
    for header in ("Status", "Error", "Latency ms", "Tokens", "Cost $", "Key", "Alias", "Tier · provider"):
        assert f">{header}</a>" in listing or f">{header}</span>" in listing, header
    assert "upstream_unavailable" in listing and "1,234" in listing


# The key's new-key page and the revoke flow.


def _decoded_cookies(response) -> list[str]:
    """Every cookie the response sets, decoded the way its reader would (messages are signed and compressed)."""
    from django.contrib.messages.storage.cookie import CookieStorage

    values = []
    for morsel in response.cookies.values():
        values.append(morsel.value)
        if morsel.key == "messages" and morsel.value:
            # The storage's own decoder; django-stubs does not declare this private method.
            decoded = CookieStorage(response.wsgi_request)._decode(morsel.value)  # type: ignore[attr-defined]
            values.append(repr([str(m) for m in decoded or []]))
    return values


def test_a_new_key_never_travels_in_a_cookie_and_is_shown_once(admin_client, db):
    response = add_key(admin_client, follow=False)
    assert response.status_code == 302
    api_key = APIKey.objects.get(name="from-admin")
    shown = admin_client.get(response["Location"])
    keys = KEY.findall(shown.text)
    assert len(keys) == 1 and keys[0].startswith(api_key.prefix)
    secret_part = keys[0][len(api_key.prefix) :]
    for reply in (response, shown):
        for value in _decoded_cookies(reply):
            # No run of 6 characters of the secret part, in any cookie, decoded or not.
            assert not any(secret_part[i : i + 6] in value for i in range(len(secret_part) - 5)), value
    assert "copy it now, it will not be shown again" in shown.text
    for url in (admin_url(APIKey, "changelist"), admin_url(APIKey, "change", api_key.pk)):
        assert keys[0] not in admin_client.get(url).text


def test_save_and_continue_shows_the_new_key_on_its_change_page(admin_client, db):
    response = add_key(admin_client, _continue="1")
    api_key = APIKey.objects.get(name="from-admin")
    assert response.wsgi_request.path == admin_url(APIKey, "change", api_key.pk)
    assert len(KEY.findall(response.text)) == 1


def test_keys_are_not_created_when_sessions_live_in_cookies(client, admin_user, settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    client.force_login(admin_user)
    response = add_key(client)
    assert response.status_code == 403
    assert not APIKey.objects.exists()


def test_the_key_form_offers_alias_and_policy_names_as_checkboxes(admin_client, configured):
    page = admin_client.get(admin_url(APIKey, "add")).text
    for alias in Alias.objects.values_list("name", flat=True):
        assert f'type="checkbox" name="allowed_aliases" value="{alias}"' in page
    for policy in Policy.objects.values_list("name", flat=True):
        assert f'type="checkbox" name="allowed_policies" value="{policy}"' in page
    assert '<select name="default_policy"' in page
    free = Policy.objects.get(name="free")
    add_key(
        admin_client,
        allowed_aliases=["rainymodel/chat", "rainymodel/code"],
        allowed_policies=["free", "auto"],
        default_policy=str(free.pk),
    )
    api_key = APIKey.objects.get(name="from-admin")
    assert api_key.allowed_aliases == ["rainymodel/chat", "rainymodel/code"]
    assert api_key.allowed_policies == ["free", "auto"]
    assert api_key.default_policy == free
    page = admin_client.get(admin_url(APIKey, "change", api_key.pk)).text
    assert re.search(r'name="allowed_aliases" value="rainymodel/chat"[^>]*checked', page)
    assert not re.search(r'name="allowed_aliases" value="rainymodel/auto"[^>]*checked', page)


def test_the_key_form_refuses_a_default_policy_that_is_not_allowed(admin_client, configured):
    premium = Policy.objects.get(name="premium")
    response = add_key(admin_client, allowed_policies=["free"], default_policy=str(premium.pk))
    assert "is not among the allowed policies" in response.text
    assert not APIKey.objects.filter(name="from-admin").exists()


def test_a_stored_name_that_no_longer_exists_is_shown_and_must_be_unticked(admin_client, configured):
    APIKey.objects.filter(pk=configured.pk).update(allowed_aliases=["rainymodel/chat", "rainymodel/gone"])
    page = admin_client.get(admin_url(APIKey, "change", configured.pk)).text
    assert "rainymodel/gone (no longer exists)" in page
    data = {
        "name": configured.name,
        "allowed_aliases": ["rainymodel/chat", "rainymodel/gone"],
        "quotas-TOTAL_FORMS": "0",
        "quotas-INITIAL_FORMS": "0",
        "quotas-MIN_NUM_FORMS": "0",
        "quotas-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(admin_url(APIKey, "change", configured.pk), data)
    assert "No alias named &#x27;rainymodel/gone&#x27;" in response.text
    data["allowed_aliases"] = ["rainymodel/chat"]
    assert admin_client.post(admin_url(APIKey, "change", configured.pk), data).status_code == 302
    configured.refresh_from_db()
    assert configured.allowed_aliases == ["rainymodel/chat"]


def test_the_change_page_has_a_revoke_button_that_asks_first(admin_client, configured):
    change_url = admin_url(APIKey, "change", configured.pk)
    revoke_url = reverse("admin:apikeys_apikey_revoke", args=[configured.pk])
    assert f'href="{revoke_url}"' in admin_client.get(change_url).text
    confirmation = admin_client.get(revoke_url)
    assert confirmation.status_code == 200 and "Yes, revoke it" in confirmation.text
    configured.refresh_from_db()
    assert not configured.is_revoked


def test_revoking_needs_csrf_and_leaves_an_audit_trail(client, admin_user, configured):
    from django.contrib.admin.models import LogEntry
    from django.test import Client

    revoke_url = reverse("admin:apikeys_apikey_revoke", args=[configured.pk])
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post(revoke_url).status_code == 403
    configured.refresh_from_db()
    assert not configured.is_revoked

    page = strict.get(revoke_url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = strict.post(revoke_url, {"csrfmiddlewaretoken": token}, follow=True)
    configured.refresh_from_db()
    assert configured.is_revoked
    assert f"API key “laptop” ({configured.prefix}…) revoked by {admin_user.username} at" in response.text
    assert f'href="{revoke_url}"' not in response.text  # no Revoke button on a revoked key
    entry = LogEntry.objects.get(object_id=str(configured.pk))
    assert entry.user == admin_user and "Revoked" in entry.get_change_message()


def test_non_staff_cannot_revoke(client, django_user_model, configured):
    user = django_user_model.objects.create_user("visitor", password="pw-for-tests-only")
    client.force_login(user)
    response = client.post(reverse("admin:apikeys_apikey_revoke", args=[configured.pk]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    configured.refresh_from_db()
    assert not configured.is_revoked
