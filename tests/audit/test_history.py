"""The audit trail (audit/history.py, issue 15): every change to providers, aliases, routes, policies, settings,
keys and quotas is recorded with who, from where and what changed, from the admin, the usage pages, `routing
import` and the `apikey` command; secrets and their HMACs never land in it; the log writer's `last_used_at` updates
write nothing."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from simple_history.utils import get_history_model_for_model

from apikeys.keys import hash_key
from apikeys.models import APIKey, Quota, UserLimits, UserQuota
from apikeys.services import apikey_create, apikey_revoke, apikey_rotate
from audit.history import AUDITED, acting, os_user
from routing.models import Alias, Policy, Provider, Route, RoutingSettings
from tests.usage.test_writer import row as log_row
from usage.writer import write_batch

pytestmark = pytest.mark.django_db


def history(model, **filters):
    return list(model.history.filter(**filters).order_by("history_date", "history_id"))


def routing_command(*args) -> str:
    out = StringIO()
    call_command("routing", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def apikey_command(*args) -> str:
    out = StringIO()
    call_command("apikey", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def provider_form(provider: Provider, **changes) -> dict:
    data = {
        "name": provider.name,
        "kind": provider.kind,
        "tier": provider.tier,
        "enabled": "on" if provider.enabled else "",
        "base_url": provider.base_url,
        "api_key_env": provider.api_key_env,
        "extra_headers": "{}",
        "connect_timeout_s": provider.connect_timeout_s,
        "first_token_timeout_s": provider.first_token_timeout_s,
        "idle_timeout_s": provider.idle_timeout_s,
        "request_timeout_s": provider.request_timeout_s,
        "max_retries": provider.max_retries,
        "breaker_failures": provider.breaker_failures,
        "breaker_cooldown_s": provider.breaker_cooldown_s,
        "credit_cooldown_s": provider.credit_cooldown_s,
    }
    return {**data, **changes}


# --- the admin ----------------------------------------------------------------------------------------------------


def test_an_admin_change_of_a_provider_records_the_user_and_the_field_diff(admin_client, admin_user):
    routing_command("load-defaults")
    provider = Provider.objects.get(name="hf")
    url = reverse("admin:routing_provider_change", args=[provider.pk])
    response = admin_client.post(url, provider_form(provider, max_retries=5, request_timeout_s=90))
    assert response.status_code == 302, response.content.decode()[:2000]

    created, changed = history(Provider, id=provider.pk)
    assert created.history_type == "+" and created.history_source == "routing load-defaults"
    assert changed.history_type == "~"
    assert changed.history_user == admin_user
    assert changed.history_actor == admin_user.get_username()
    assert changed.history_source == "admin"
    diff = {c.field: (c.old, c.new) for c in changed.diff_against(created).changes}
    assert diff == {"max_retries": (2, 5), "request_timeout_s": (120.0, 90.0)}


def test_an_admin_save_without_edits_records_nothing(admin_client):
    routing_command("load-defaults")
    provider = Provider.objects.get(name="hf")
    url = reverse("admin:routing_provider_change", args=[provider.pk])
    assert admin_client.post(url, provider_form(provider)).status_code == 302
    assert len(history(Provider, id=provider.pk)) == 1


def test_the_admins_revoke_button_records_the_user(admin_client, admin_user):
    api_key, _ = apikey_create(name="ci")
    url = reverse("admin:apikeys_apikey_revoke", args=[api_key.pk])
    assert admin_client.post(url).status_code == 302
    revoked = history(APIKey, id=api_key.pk)[-1]
    assert revoked.revoked_at is not None
    assert (revoked.history_user, revoked.history_source) == (admin_user, "admin")


def test_a_key_added_in_the_admin_records_the_user_and_its_inline_quota(admin_client, admin_user):
    data = {
        "name": "from-admin",
        "rpm_limit": "60",
        "quotas-TOTAL_FORMS": "1",
        "quotas-INITIAL_FORMS": "0",
        "quotas-MIN_NUM_FORMS": "0",
        "quotas-MAX_NUM_FORMS": "1000",
        "quotas-0-period": "day",
        "quotas-0-max_requests": "100",
    }
    response = admin_client.post(reverse("admin:apikeys_apikey_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    api_key = APIKey.objects.get(name="from-admin")
    (created,) = history(APIKey, id=api_key.pk)
    (quota,) = history(Quota, api_key_id=api_key.pk)
    for record in (created, quota):
        assert (record.history_type, record.history_user, record.history_source) == ("+", admin_user, "admin")
    assert created.rpm_limit == 60 and quota.max_requests == 100


# --- routing import -----------------------------------------------------------------------------------------------


def test_routing_import_records_every_create_change_and_delete_as_the_import(tmp_path):
    routing_command("load-defaults")
    before = {model: model.history.count() for model in (Provider, Alias, Route, Policy, RoutingSettings)}
    exported = StringIO()
    call_command("routing", "export", stdout=exported)
    document = yaml.safe_load(exported.getvalue())
    # hf gets 4 retries, the alias rainymodel/code and its routes go, a provider and an alias arrive.
    next(p for p in document["providers"] if p["name"] == "hf")["max_retries"] = 4
    document["aliases"] = [a for a in document["aliases"] if a["name"] != "rainymodel/code"]
    document["providers"].append(
        {"name": "extra", "kind": "openai", "tier": "premium", "base_url": "https://x.test/v1"}
    )
    document["aliases"].append(
        {"name": "rainymodel/extra", "routes": [{"provider": "extra", "upstream_model": "gpt-x"}]}
    )
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    code_alias = Alias.objects.get(name="rainymodel/code")
    code_routes = list(code_alias.routes.values_list("id", flat=True))

    routing_command("import", str(path), "--replace", "--actor", "carol")

    new_rows = {
        model: list(model.history.order_by("history_id")[before[model] :])
        for model in (Provider, Alias, Route, Policy, RoutingSettings)
    }
    every_row = [r for rows in new_rows.values() for r in rows]
    assert every_row
    for record in every_row:
        assert record.history_source == "routing import"
        assert record.history_actor == f"carol (OS user {os_user()})"
        assert record.history_change_reason == f"{path} --replace"
    # Only what changed: hf changed, extra created; the other providers untouched.
    assert [(r.name, r.history_type) for r in new_rows[Provider]] == [("hf", "~"), ("extra", "+")]
    hf_change = new_rows[Provider][0]
    assert {c.field: (c.old, c.new) for c in hf_change.diff_against(hf_change.prev_record).changes} == {
        "max_retries": (2, 4)
    }
    alias_rows = {(r.name, r.history_type) for r in new_rows[Alias]}
    assert alias_rows == {("rainymodel/code", "-"), ("rainymodel/extra", "+")}
    deleted_routes = {r.id for r in new_rows[Route] if r.history_type == "-"}
    assert deleted_routes == set(code_routes)  # cascaded with their alias, each recorded
    assert [(r.upstream_model, r.history_type) for r in new_rows[Route] if r.history_type != "-"] == [("gpt-x", "+")]
    assert new_rows[Policy] == [] and new_rows[RoutingSettings] == []


def test_an_import_that_changes_the_default_policy_records_the_old_default_losing_it(tmp_path):
    routing_command("load-defaults")
    old_default = Policy.objects.get(is_default=True)
    other = Policy.objects.exclude(pk=old_default.pk).first()
    assert other is not None
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump({"policies": [{"name": other.name, "tiers": other.tiers, "is_default": True}]}))
    routing_command("import", str(path))
    lost = history(Policy, id=old_default.pk)[-1]
    assert (lost.history_type, lost.is_default, lost.history_source) == ("~", False, "routing import")
    gained = history(Policy, id=other.pk)[-1]
    assert (gained.history_type, gained.is_default) == ("~", True)


def test_deleting_a_policy_records_the_aliases_and_keys_that_lose_it(admin_user):
    routing_command("load-defaults")
    policy = Policy.objects.create(name="doomed", tiers=["free"])
    alias = Alias.objects.create(name="rainymodel/doomed", default_policy=policy)
    api_key, _ = apikey_create(name="k", default_policy=policy)
    RoutingSettings.objects.update_or_create(pk=1, defaults={"catch_all_alias": alias})
    with acting(source="test", actor="tester"):
        alias.delete()
        policy.delete()
    settings_change = history(RoutingSettings)[-1]
    assert (settings_change.catch_all_alias_id, settings_change.history_source) == (None, "test")
    key_change = history(APIKey, id=api_key.pk)[-1]
    assert (key_change.history_type, key_change.default_policy_id, key_change.history_actor) == ("~", None, "tester")


def test_load_defaults_records_its_source(db):
    routing_command("load-defaults")
    sources = {r.history_source for model in (Provider, Alias, Route, Policy) for r in model.history.all()}
    assert sources == {"routing load-defaults"}


# --- the apikey command -------------------------------------------------------------------------------------------


def test_apikey_create_and_revoke_are_recorded_without_the_secret(django_user_model):
    dave = django_user_model.objects.create_user("dave")
    output = apikey_command("create", "--name", "ci", "--rpm", "30", "--quota", "requests:100/day", "--actor", "dave")
    full_key = output.strip().splitlines()[-1]
    api_key = APIKey.objects.get(name="ci")
    (created,) = history(APIKey, id=api_key.pk)
    assert (created.history_type, created.history_source, created.history_user) == ("+", "apikey create", dave)
    assert created.history_actor == f"dave (OS user {os_user()})"
    assert (created.prefix, created.rpm_limit) == (api_key.prefix, 30)
    (quota,) = history(Quota, api_key_id=api_key.pk)
    assert (quota.max_requests, quota.history_source) == (100, "apikey create")

    apikey_command("revoke", full_key)
    revoked = history(APIKey, id=api_key.pk)[-1]
    assert (revoked.history_type, revoked.history_source, revoked.history_user) == ("~", "apikey revoke", None)
    assert revoked.history_actor == f"{os_user()} (OS user)"
    assert revoked.revoked_at is not None
    assert {c.field for c in revoked.diff_against(created).changes} == {"revoked_at"}
    assert_no_secret_in_history(full_key, hash_key(full_key))


def test_apikey_user_limits_records_limits_and_quotas_and_their_removal(django_user_model):
    django_user_model.objects.create_user("erin")
    apikey_command("user-limits", "erin", "--rpm", "100", "--quota", "tokens:5000/day", "--actor", "ops")
    limits = UserLimits.history.latest()  # the command creates the row, then sets its limits: two rows
    (quota,) = UserQuota.history.all()
    assert (limits.rpm_limit, limits.history_source, limits.history_actor) == (
        100,
        "apikey user-limits",
        f"ops (OS user {os_user()})",
    )
    assert quota.max_tokens == 5000
    apikey_command("user-limits", "erin", "--clear")
    assert UserLimits.history.filter(history_type="-").count() == 1
    assert UserQuota.history.filter(history_type="-").count() == 1  # cascaded, still recorded


# --- the usage pages ----------------------------------------------------------------------------------------------


def test_a_key_a_signed_in_user_creates_and_revokes_is_recorded_with_that_user(django_user_model):
    frank = django_user_model.objects.create_user("frank", password="pw-frank-123")
    client = Client()
    client.force_login(frank)
    response = client.post("/usage/keys/new/", {"name": "laptop", "rpm_limit": "30"})
    assert response.status_code == 302
    api_key = APIKey.objects.get(owner=frank, name="laptop")
    assert client.post(f"/usage/keys/{api_key.id}/revoke/").status_code == 302
    created, revoked = history(APIKey, id=api_key.pk)
    for record in (created, revoked):
        assert (record.history_user, record.history_actor, record.history_source) == (frank, "frank", "usage pages")
    assert (created.history_type, revoked.history_type) == ("+", "~")


# --- secrets ------------------------------------------------------------------------------------------------------


def history_text() -> str:
    """Every value of every row of every historical table, as text."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for model in AUDITED:
            table = get_history_model_for_model(model)._meta.db_table
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(str(value) for row in cursor.fetchall() for value in row)
    return "\n".join(chunks)


def assert_no_secret_in_history(*secrets: str) -> None:
    text = history_text()
    assert text  # there is history to search
    for secret in secrets:
        assert secret and secret not in text


def test_no_key_secret_or_hmac_and_no_provider_credential_lands_in_any_history_table(django_user_model):
    owner = django_user_model.objects.create_user("gina", password="pw-gina-123")
    api_key, first = apikey_create(name="rotating", owner=owner)
    api_key, second = apikey_rotate(api_key=api_key, grace=timedelta(hours=1))
    api_key, third = apikey_rotate(api_key=api_key, grace=timedelta(0))
    api_key.refresh_from_db()
    assert api_key.previous_hashed_key == ""
    client = Client()
    client.force_login(owner)
    client.post("/usage/keys/new/", {"name": "self-made"})
    self_made = APIKey.objects.get(name="self-made")
    revoked, fourth = apikey_create(name="revoked")
    apikey_revoke(api_key=revoked)
    Provider.objects.create(
        name="private",
        kind="openai",
        tier="premium",
        base_url="https://svc:hunter2-password@llm.internal/v1",
        api_key_env="PRIVATE_KEY",
        extra_headers={"Authorization": "Bearer sk-live-abcdef", "X-Api-Key": "xk-123456", "X-Title": "RainyModel"},
    )

    assert_no_secret_in_history(
        first,
        second,
        third,
        fourth,
        hash_key(first),
        hash_key(second),
        hash_key(third),
        hash_key(fourth),
        self_made.hashed_key,
        "hunter2-password",
        "sk-live-abcdef",
        "xk-123456",
    )
    provider = Provider.history.get(name="private")
    assert provider.base_url == "https://svc:(hidden)@llm.internal/v1"
    assert provider.extra_headers == {"Authorization": "(hidden)", "X-Api-Key": "(hidden)", "X-Title": "RainyModel"}
    assert provider.api_key_env == "PRIVATE_KEY"  # a variable's name, not the secret
    # Each rotation is recorded, by its reason: the HMAC that changed is not in the trail.
    rotations = APIKey.history.filter(id=api_key.pk, history_change_reason="secret rotated")
    assert rotations.count() == 2


# --- what is not a change -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_log_writers_last_used_at_updates_create_no_history():
    api_key, _ = apikey_create(name="busy")
    rows_before = APIKey.history.count()
    write_batch([log_row("req-audit-1", api_key_id=api_key.pk, key_prefix=api_key.prefix)])
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None  # the writer did update it
    assert APIKey.history.count() == rows_before
    assert "last_used_at" not in {f.name for f in APIKey.history.model._meta.fields}


def test_a_save_that_changes_nothing_records_nothing_and_a_change_records_one_row():
    provider = Provider.objects.create(name="p", kind="openai", tier="free", base_url="https://p.test/v1")
    provider.save()
    provider.enabled = False
    provider.save()
    provider.save()
    assert [r.history_type for r in history(Provider, id=provider.pk)] == ["+", "~"]


def test_every_audited_model_is_recorded():
    names = {m._meta.label for m in AUDITED}
    assert names == {
        "routing.Provider",
        "routing.Alias",
        "routing.Route",
        "routing.Policy",
        "routing.RoutingSettings",
        "apikeys.APIKey",
        "apikeys.Quota",
        "apikeys.UserKeyCaps",
        "apikeys.UserLimits",
        "apikeys.UserQuota",
    }


def test_a_change_from_code_names_the_process_and_the_os_user():
    Provider.objects.create(name="q", kind="openai", tier="free", base_url="https://q.test/v1")
    (record,) = Provider.history.all()
    assert record.history_source == "code (shell or script)"
    assert record.history_actor == f"{os_user()} (OS user)"
    assert record.history_user is None
