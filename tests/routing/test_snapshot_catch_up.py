"""routing/snapshot.catch_up and apikeys.auth.authenticate_request: a key created a moment ago works on its first
request, and a flood of unknown keys does not become a flood of version checks."""

import asyncio
import threading
import time

import pytest

from apikeys.auth import KeyRejected, authenticate_request
from apikeys.services import apikey_create
from routing import snapshot

pytestmark = pytest.mark.django_db(transaction=True)  # keys must be committed for the bump to run


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
