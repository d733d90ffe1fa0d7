"""routing/snapshot.py: the snapshot built from database rows, rebuilt when the shared config version moves
(every committed change to routing config or keys bumps it: routing/config_version.py), and the catch-up
(`snapshot.catch_up`, `apikeys.auth.authenticate_request`): a key created a moment ago works on its first request,
and a flood of unknown keys does not become a flood of version checks."""

import asyncio
import threading
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from apikeys.auth import KeyRejected, authenticate_request
from apikeys.services import apikey_create
from routing import config_version, snapshot
from routing.models import Provider
from tests.fakes.routing_config import make_routing, upstream

pytestmark = pytest.mark.django_db(transaction=True)  # changes must be committed for the bump to run


# --- built from the database -------------------------------------------------------------------------------------


def test_the_snapshot_holds_the_routing_rows(monkeypatch):
    monkeypatch.setenv("TEST_PREMIUM_KEY", "sk-from-the-environment")
    make_routing(
        upstream("http://127.0.0.1:9/v1/", name="hf", upstream_model="m-free", context_window=8000),
        upstream(
            "http://127.0.0.1:8/v1",
            tier="premium",
            name="or",
            api_key_env="TEST_PREMIUM_KEY",
            upstream_model="m-premium",
            input_price_per_mtok=Decimal("2.5"),
            output_price_per_mtok=10,
        ),
    )
    Provider.objects.filter(name="hf").update(base_url="http://127.0.0.1:9/v1/")  # past the form's cleaning
    snap = snapshot.refresh()
    assert snap.providers["hf"].base_url == "http://127.0.0.1:9/v1"  # trailing slash dropped
    assert snap.providers["hf"].api_key == ""
    assert snap.providers["or"].api_key == "sk-from-the-environment"  # resolved when built, never stored
    alias = snap.aliases["rainymodel/auto"]
    assert [(r.provider.name, r.upstream_model, r.alias) for r in alias.routes] == [
        ("hf", "m-free", "rainymodel/auto"),
        ("or", "m-premium", "rainymodel/auto"),
    ]
    assert alias.routes[0].context_window == 8000
    assert (alias.routes[1].input_price_per_mtok, alias.routes[1].output_price_per_mtok) == (2.5, 10.0)
    assert snap.policies["auto"].tiers == ("free", "internal", "premium") and snap.default_policy == "auto"
    assert snap.catch_all_alias == "rainymodel/auto"
    assert snap.version == config_version.read_version()


def test_the_snapshot_holds_the_keys_with_their_limits_and_quotas():
    premium = make_routing(upstream("http://127.0.0.1:9/v1")).policies["premium"]
    api_key, _ = apikey_create(
        name="limited",
        rpm_limit=60,
        tpm_limit=1000,
        max_concurrent=2,
        allowed_aliases=["rainymodel/auto"],
        allowed_policies=["Premium", "free"],
        default_policy=premium,
        quotas=[("day", "max_requests", 100)],
    )
    info = snapshot.refresh().keys_by_prefix[api_key.prefix]
    assert (info.id, info.name, info.hashed_key) == (api_key.id, "limited", api_key.hashed_key)
    assert (info.rpm_limit, info.tpm_limit, info.max_concurrent) == (60, 1000, 2)
    assert info.allowed_aliases == frozenset({"rainymodel/auto"})
    assert info.allowed_policies == ("premium", "free")  # lower-case, in the key's order
    assert info.default_policy == "premium"
    assert [(q.period, q.max_requests, q.max_tokens) for q in info.quotas] == [("day", 100, None)]
    assert not info.revoked and not info.is_master


# --- the version moves -> rebuilt ---------------------------------------------------------------------------------


def test_a_committed_routing_change_rebuilds_the_snapshot():
    make_routing(upstream("http://127.0.0.1:9/v1", name="hf"))
    before = snapshot.refresh()
    snapshot.poll_once()
    assert snapshot.current() is before  # nothing moved: nothing rebuilt
    provider = Provider.objects.get(name="hf")
    provider.base_url = "http://127.0.0.1:7/v1"
    provider.save()
    assert config_version.read_version() > before.version
    snapshot.poll_once()
    assert snapshot.current().providers["hf"].base_url == "http://127.0.0.1:7/v1"


def test_a_committed_key_change_rebuilds_the_snapshot():
    api_key, _ = apikey_create(name="k")
    before = snapshot.refresh()
    api_key.rpm_limit = 5
    api_key.save()
    snapshot.poll_once()
    assert snapshot.current() is not before
    assert snapshot.current().keys_by_prefix[api_key.prefix].rpm_limit == 5


def test_a_last_used_at_update_is_not_a_config_change():
    api_key, _ = apikey_create(name="k")
    version = config_version.read_version()
    api_key.last_used_at = timezone.now()
    api_key.save(update_fields=["last_used_at"])
    assert config_version.read_version() == version


# --- catch-up ------------------------------------------------------------------------------------------------------


def bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


def test_a_key_created_after_the_snapshot_is_found_by_one_check():
    seen = snapshot.refresh()
    api_key, full_key = apikey_create(name="fresh")
    assert api_key.prefix not in seen.keys_by_prefix
    info = asyncio.run(authenticate_request(seen, bearer(full_key)))
    assert info.id == api_key.id
    assert api_key.prefix in snapshot.current().keys_by_prefix


def test_a_key_nobody_created_is_still_refused():
    seen = snapshot.refresh()
    with pytest.raises(KeyRejected) as rejected:
        asyncio.run(authenticate_request(seen, bearer("rm-" + "x" * 40)))
    assert rejected.value.code == "invalid_api_key"
    assert snapshot.current() is seen  # the version had not moved: nothing was rebuilt


def test_a_flood_of_unknown_keys_shares_a_few_checks():
    seen = snapshot.refresh()
    before = snapshot._holder.catch_up_checks

    async def flood():
        return await asyncio.gather(*(snapshot.catch_up(seen) for _ in range(500)), return_exceptions=True)

    started = time.monotonic()
    results = asyncio.run(flood())
    elapsed = time.monotonic() - started
    assert results == [None] * 500
    # At most one check per interval (plus the one that starts at once), however many callers: on an idle machine
    # that is 2 checks for 500 callers (the first, then one that started after all of them had arrived).
    checks = snapshot._holder.catch_up_checks - before
    assert checks <= elapsed / snapshot.CATCH_UP_INTERVAL_S + 1, (checks, elapsed)
    assert checks < 50


def test_a_caller_does_not_settle_for_a_check_that_started_before_it_arrived():
    """A check already in flight may have read the version before the key existed: the caller waits for the next."""
    seen = snapshot.refresh()
    release = threading.Event()
    with snapshot._holder.catch_up_lock:  # a check that started before the key was created, still running
        snapshot._holder.catch_up = snapshot._catch_up_executor.submit(release.wait)
        snapshot._holder.catch_up_started = time.monotonic()
    _, full_key = apikey_create(name="during")

    async def scenario():
        request = asyncio.ensure_future(authenticate_request(seen, bearer(full_key)))
        await asyncio.sleep(0.05)
        release.set()
        return await request

    assert asyncio.run(scenario()).name == "during"
