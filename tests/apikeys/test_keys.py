"""API keys (SPEC §3, §5): `rm-` + random characters, stored only as prefix + HMAC, looked up by prefix in the
snapshot, compared in constant time; revoked and expired keys are refused with the SPEC's codes."""

import hashlib
import hmac
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apikeys import auth, keys
from apikeys.auth import KeyRejected, authenticate
from apikeys.keys import generate_key, hash_key, key_prefix, verify_key
from apikeys.models import APIKey
from apikeys.services import apikey_create, apikey_revoke
from routing.snapshot import build_snapshot


def bearer(key):
    return {"authorization": f"Bearer {key}"}


def rejected(headers) -> str:
    with pytest.raises(KeyRejected) as caught:
        authenticate(build_snapshot(0), headers)
    return caught.value.code


def test_generated_keys_have_the_spec_format_and_differ():
    generated = {generate_key() for _ in range(200)}
    assert len(generated) == 200
    for key in generated:
        assert re.fullmatch(r"rm-[A-Za-z0-9_-]{32,}", key)
        assert re.fullmatch(r"rm-[A-Za-z0-9]{9}", key_prefix(key))


def test_the_database_holds_the_prefix_and_an_hmac_never_the_key(db):
    api_key, full_key = apikey_create(name="laptop")
    row = APIKey.objects.filter(pk=api_key.pk).values().get()
    assert row["prefix"] == full_key[:12]
    expected = hmac.new(settings.SECRET_KEY.encode(), full_key.encode(), hashlib.sha256).hexdigest()
    assert row["hashed_key"] == expected
    assert full_key not in repr(row)


def test_a_created_key_authenticates_by_bearer_and_api_key_header(db):
    api_key, full_key = apikey_create(name="laptop", rpm_limit=60)
    snap = build_snapshot(0)
    for headers in (bearer(full_key), {"api-key": full_key}):
        info = authenticate(snap, headers)
        assert (info.id, info.prefix, info.rpm_limit) == (api_key.id, api_key.prefix, 60)


def test_a_key_with_the_right_prefix_but_wrong_rest_is_refused(db):
    _, full_key = apikey_create(name="laptop")
    forged = full_key[:12] + ("A" if full_key[12] != "A" else "B") + full_key[13:]
    assert rejected(bearer(forged)) == "invalid_api_key"


def test_unknown_and_missing_keys_are_refused(db):
    apikey_create(name="laptop")
    assert rejected(bearer(generate_key())) == "invalid_api_key"
    assert rejected({}) == "invalid_api_key"
    assert rejected({"authorization": "Basic abc"}) == "invalid_api_key"


def test_a_revoked_key_is_refused(db):
    api_key, full_key = apikey_create(name="laptop")
    apikey_revoke(api_key=api_key)
    assert APIKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert rejected(bearer(full_key)) == "invalid_api_key"


def test_revoking_twice_keeps_the_first_time(db):
    api_key, _ = apikey_create(name="laptop")
    first = apikey_revoke(api_key=api_key).revoked_at
    assert apikey_revoke(api_key=APIKey.objects.get(pk=api_key.pk)).revoked_at == first


def test_an_expired_key_is_refused_as_key_expired(db):
    api_key, full_key = apikey_create(name="laptop", expires_at=timezone.now() + timedelta(hours=1))
    authenticate(build_snapshot(0), bearer(full_key))
    APIKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert rejected(bearer(full_key)) == "key_expired"


def test_an_expired_key_with_a_wrong_secret_is_invalid_not_expired(db):
    api_key, full_key = apikey_create(name="laptop")
    APIKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert rejected(bearer(full_key[:-1] + ("x" if full_key[-1] != "x" else "y"))) == "invalid_api_key"


def test_lookup_compares_the_hmac_in_constant_time(db, monkeypatch):
    _, full_key = apikey_create(name="laptop")
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    stored = APIKey.objects.get().hashed_key
    authenticate(build_snapshot(0), bearer(full_key))
    assert (hash_key(full_key), stored) in calls
    calls.clear()
    assert verify_key(full_key, stored) and calls == [(hash_key(full_key), stored)]


def test_quotas_are_created_with_the_key(db):
    api_key, full_key = apikey_create(
        name="laptop",
        quotas=[("day", "max_requests", 1000), ("month", "max_tokens", 2_000_000), ("month", "max_cost_usd", 5)],
    )
    quotas = {q.period: (q.max_requests, q.max_tokens, q.max_cost_usd) for q in api_key.quotas.all()}
    assert quotas == {"day": (1000, None, None), "month": (None, 2_000_000, 5)}
    info = authenticate(build_snapshot(0), bearer(full_key))
    assert {q.period for q in info.quotas} == {"day", "month"}
