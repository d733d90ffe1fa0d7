"""Self-service keys (docs/users.md): per-user caps, unique names per owner, rotation with a graced previous
secret (checked by the real auth over the real snapshot), and the migration that renames existing duplicates."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apikeys.auth import KeyRejected, authenticate
from apikeys.models import APIKey, UserKeyCaps
from apikeys.services import CapExceeded, apikey_create, apikey_create_for_user, apikey_max_grace, apikey_rotate
from routing import snapshot
from routing.models import Alias


@pytest.fixture
def alice(db, django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


def _auth(key):
    return authenticate(snapshot.refresh(), {"Authorization": f"Bearer {key}"})


def test_without_caps_a_user_gets_what_they_ask(alice):
    api_key, full = apikey_create_for_user(user=alice, name="laptop", rpm_limit=500)
    assert api_key.owner == alice and api_key.rpm_limit == 500
    assert _auth(full).id == api_key.id


def test_the_default_caps_fill_empty_limits_and_refuse_larger_ones_naming_the_cap(alice):
    UserKeyCaps.objects.create(
        user=None, max_keys=2, max_rpm=60, max_tpm=10_000, max_tokens_per_day=1000, max_cost_usd_per_month=5
    )
    api_key, _ = apikey_create_for_user(user=alice, name="a")
    assert (api_key.rpm_limit, api_key.tpm_limit, api_key.max_concurrent) == (60, 10_000, None)
    quotas = {q.period: q for q in api_key.quotas.all()}
    assert quotas["day"].max_tokens == 1000 and quotas["month"].max_cost_usd == Decimal(5)
    with pytest.raises(CapExceeded) as refused:
        apikey_create_for_user(user=alice, name="b", rpm_limit=61)
    assert refused.value.cap == "max_rpm" and "at most 60" in refused.value.message
    with pytest.raises(CapExceeded) as refused:
        apikey_create_for_user(user=alice, name="b", quotas=[("day", "max_tokens", 1001)])
    assert refused.value.cap == "max_tokens_per_day"
    apikey_create_for_user(user=alice, name="b", rpm_limit=10)
    with pytest.raises(CapExceeded) as refused:
        apikey_create_for_user(user=alice, name="c")
    assert refused.value.cap == "max_keys" and "at most 2 keys" in refused.value.message
    assert APIKey.objects.filter(owner=alice).count() == 2


def test_a_users_own_caps_beat_the_default_and_staff_are_not_capped(alice, django_user_model):
    Alias.objects.create(name="rainymodel/chat")
    Alias.objects.create(name="rainymodel/other")
    UserKeyCaps.objects.create(user=None, max_rpm=10)
    UserKeyCaps.objects.create(user=alice, max_rpm=100, allowed_aliases=["rainymodel/chat"])
    assert apikey_create_for_user(user=alice, name="a", rpm_limit=100)[0].rpm_limit == 100
    with pytest.raises(CapExceeded) as refused:
        apikey_create_for_user(user=alice, name="b", allowed_aliases=["rainymodel/other"])
    assert refused.value.cap == "allowed_aliases"
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    assert apikey_create_for_user(user=staff, name="big", rpm_limit=10_000)[0].rpm_limit == 10_000


def test_key_names_are_unique_per_owner_only(alice, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    apikey_create_for_user(user=alice, name="laptop")
    with pytest.raises(ValidationError) as refused:
        apikey_create_for_user(user=alice, name="laptop")
    assert "already has a key with this name" in str(refused.value)
    apikey_create_for_user(user=bob, name="laptop")  # another owner may use the name


def test_rotation_keeps_the_row_and_accepts_the_old_secret_until_the_grace_ends(alice):
    api_key, old = apikey_create_for_user(user=alice, name="laptop", rpm_limit=5)
    rotated, new = apikey_rotate(api_key=api_key, grace=timedelta(hours=1))
    assert rotated.pk == api_key.pk and rotated.rpm_limit == 5 and new != old and new[:12] == old[:12]
    assert _auth(new).id == api_key.id and _auth(old).id == api_key.id
    APIKey.objects.filter(pk=api_key.pk).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
    assert _auth(new).id == api_key.id
    with pytest.raises(KeyRejected):
        _auth(old)


def test_rotation_without_grace_refuses_the_old_secret_at_once_and_a_second_rotation_drops_the_first(alice):
    api_key, first = apikey_create_for_user(user=alice, name="laptop")
    _, second = apikey_rotate(api_key=api_key, grace=timedelta(0))
    with pytest.raises(KeyRejected):
        _auth(first)
    _, third = apikey_rotate(api_key=api_key, grace=timedelta(hours=1))
    assert _auth(second) and _auth(third)
    with pytest.raises(KeyRejected):
        _auth(first)


def test_the_grace_is_capped(alice):
    UserKeyCaps.objects.create(user=None, max_rotation_grace_hours=2)
    api_key, _ = apikey_create_for_user(user=alice, name="laptop")
    with pytest.raises(CapExceeded) as refused:
        apikey_rotate(api_key=api_key, grace=timedelta(hours=3), max_grace=apikey_max_grace(user=alice))
    assert refused.value.cap == "max_rotation_grace_hours"


def test_the_migration_renames_duplicate_names_per_owner(transactional_db, django_user_model):
    before, after = [("apikeys", "0002_human_field_labels")], [("apikeys", "0003_self_service_keys")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    apps = MigrationExecutor(connection).loader.project_state(before).apps
    User = apps.get_model("auth", "User")
    OldKey = apps.get_model("apikeys", "APIKey")
    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")
    now = timezone.now()
    for i, (owner, name) in enumerate([(alice, "x"), (alice, "x"), (alice, "x"), (bob, "x"), (alice, "x (2)")]):
        OldKey.objects.create(
            name=name, owner=owner, prefix=f"rm-{i:09d}", hashed_key="0" * 64, created_at=now + timedelta(seconds=i)
        )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    names = sorted(APIKey.objects.values_list("owner__username", "name"))
    assert names == [("alice", "x"), ("alice", "x (2)"), ("alice", "x (2) (2)"), ("alice", "x (3)"), ("bob", "x")]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_staff_keys_from_apikey_create_still_need_no_owner(db):
    assert apikey_create(name="shared")[0].owner is None
    assert apikey_create(name="shared")[0].owner is None  # ownerless keys are not bound by the per-owner rule
