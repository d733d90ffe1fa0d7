"""Shared fixtures: a fake upstream, RainyModel server processes, routing rows, API keys, Redis, clean shared state.

End-to-end tests combine them:

    def test_answer_comes_back(fake_upstream, make_routing, api_key, rainymodel_server):
        make_routing(upstream(fake_upstream))
        _, key = api_key()
        server = rainymodel_server()
        httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=...)

Server processes read the test database, so anything they must see has to be committed: `rainymodel_server`
requires `transactional_db`.
"""

from __future__ import annotations

import os

import pytest

from tests.fakes.routing_config import make_routing as _make_routing
from tests.fakes.server import RainyModelServer
from tests.fakes.upstream import FakeUpstream

REDIS_PREFIX = "rm:"


@pytest.fixture
def fake_upstream():
    """A fake OpenAI-compatible upstream on loopback, answering ok unless scripted."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def rainymodel_server(transactional_db):
    """Factory: `rainymodel_server(env={...}, workers=1)` starts a RainyModel process on the test database and
    returns a started `RainyModelServer`. Every server is stopped gracefully (SIGTERM) at teardown."""
    servers: list[RainyModelServer] = []

    def start(env: dict[str, str] | None = None, **kwargs) -> RainyModelServer:
        server = RainyModelServer(env=env, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_routing(db):
    """`make_routing(upstream(fake), ...)`: providers, an alias with routes, policies auto/free/premium (auto is the
    default), catch-all set, config version bumped. See tests.fakes.routing_config."""
    return _make_routing


@pytest.fixture
def api_key(db):
    """Factory: `api_key(name="test", rpm_limit=..., ...)` -> (APIKey, full_key), via apikeys.services."""
    from apikeys.services import apikey_create

    counter = iter(range(1, 1_000_000))

    def create(name: str | None = None, **kwargs):
        return apikey_create(name=name or f"test-key-{next(counter)}", **kwargs)

    return create


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(REDIS_PREFIX + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url():
    """The REDIS_URL from the environment (skips the test when unset), with RainyModel's keys ("rm:*") flushed
    before and after. Give each concurrently running suite its own database number, e.g. redis://127.0.0.1:6379/2."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    _flush_redis(url)
    yield url
    _flush_redis(url)


@pytest.fixture(autouse=True)
def drop_unwritten_log_rows():
    """A row that a test's request left in the log writer's buffer must not be written later into another test's
    database (the writer thread flushes on its own schedule; model lookups through Django's test client are logged
    since issue 12): what is still buffered when a test ends is dropped. Tests that read rows flush first."""
    yield
    from alerts import events
    from usage.writer import writer

    writer._buffer.clear()
    events.queue.clear()  # likewise alert events no dispatcher took (the limits tests queue quota crossings)


@pytest.fixture(autouse=True)
def reset_shared_state():
    """Breaker state, counters and versions must not leak from one test into the next; nor django-ratelimit's counts
    in the cache (the usage pages' per-user rates: users of different tests can share an id)."""
    from django.core.cache import cache

    from rainymodel_site.shared_state import SharedStateUnavailable, state
    from routing import breakers

    breakers.seen.clear()  # this process's one-second cache of breaker reads
    try:
        state().flush_sync()
    except SharedStateUnavailable:
        pass
    try:
        cache.clear()
    except Exception:  # an unreachable Redis: the tests that need it say so themselves
        pass
    yield
    try:
        state().flush_sync()
    except SharedStateUnavailable:
        pass
