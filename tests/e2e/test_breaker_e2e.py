"""The circuit breaker end to end (SPEC §6): real RainyModel server processes in front of scripted fake upstreams.

Every scenario runs twice:
- `shared`: two server processes sharing the test database and Redis (skipped unless REDIS_URL is set), with the
  requests spread over both, so whatever one process learns must hold for the other;
- `single`: one process on SQLite with the in-process store (REDIS_URL blanked for the server).

Cooldowns are short (about a second) so the suite stays quick; the 429 case waits its full 7 s.

The last scenarios tell keys apart (docs/shared-state.md, "One key cannot switch off a shared upstream"): one
key's poison requests must not move another key's traffic to premium, while an outage seen by two keys, or by the
only key there is, still opens the breaker within `breaker_failures`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fakes.routing_config import upstream
from tests.fakes.server import MASTER_KEY_HEADERS
from tests.fakes.upstream import Behaviour, FakeUpstream, ok, status

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(params=["shared", "single"])
def mode(request):
    if request.param == "shared":
        if not os.environ.get("REDIS_URL"):
            pytest.skip("REDIS_URL is not set")
        request.getfixturevalue("redis_url")  # RainyModel's keys flushed before and after
    return request.param


@pytest.fixture
def fallback_upstream():
    with FakeUpstream() as fake:
        yield fake


class Cluster:
    """The server processes of one scenario, and a client that spreads requests over them in turn."""

    def __init__(self, servers, key):
        self.servers = servers
        self.key = key
        self._turn = itertools.cycle(range(len(servers)))
        self._lock = threading.Lock()

    def chat(
        self, server: int | None = None, timeout: float = 15.0, key: str | None = None, body: dict | None = None
    ) -> httpx.Response:
        if server is None:
            with self._lock:
                server = next(self._turn)
        return httpx.post(
            self.servers[server].url + "/v1/chat/completions",
            json=body or CHAT,
            timeout=timeout,
            headers={"Authorization": f"Bearer {key or self.key}"},
        )


@pytest.fixture
def start_cluster(mode, rainymodel_server, api_key):
    """`start_cluster(env=None)` after the routing is in the database: the server processes of this mode, ready."""

    def start(env: dict[str, str] | None = None) -> Cluster:
        _, key = api_key()
        if mode == "shared":
            # Started side by side: each takes a couple of seconds to boot.
            with ThreadPoolExecutor(2) as pool:
                servers = list(pool.map(lambda _: rainymodel_server(env=env), range(2)))
        else:
            servers = [rainymodel_server(env={**(env or {}), "REDIS_URL": ""})]
        return Cluster(servers, key)

    return start


def primary_and_fallback(primary, fallback, **primary_fields):
    fields = dict(name="primary", max_retries=0, breaker_failures=2, breaker_cooldown_s=1.0)
    fields.update(primary_fields)
    return (
        upstream(primary, tier="free", **fields),
        upstream(fallback, tier="premium", name="fallback", max_retries=0),
    )


def provider_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-rainymodel-provider"]


def primary_hits(fake: FakeUpstream) -> list[float]:
    return [r.received_at for r in fake.requests.chat()]


def test_failures_seen_by_one_process_open_the_breaker_for_the_other(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    make_routing(*primary_and_fallback(fake_upstream, fallback_upstream, breaker_cooldown_s=30))
    cluster = start_cluster()
    fake_upstream.default = status(503)
    assert provider_of(cluster.chat(server=0)) == "fallback"
    assert provider_of(cluster.chat(server=0)) == "fallback"
    assert len(primary_hits(fake_upstream)) == 2  # breaker_failures reached: open now

    for _ in range(3):
        response = cluster.chat(server=len(cluster.servers) - 1)
        assert provider_of(response) == "fallback"
        assert "x-rainymodel-fallback-reason" not in response.headers  # the primary was not even tried
    assert len(primary_hits(fake_upstream)) == 2


def test_outage_is_served_by_fallback_with_one_probe_per_cooldown(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    cooldown = 1.0
    # Retries allowed: a probe must still be a single attempt (its failure re-opens the breaker at once).
    make_routing(*primary_and_fallback(fake_upstream, fallback_upstream, breaker_cooldown_s=cooldown, max_retries=2))
    cluster = start_cluster()
    fake_upstream.default = status(503)
    for _ in range(2):
        assert provider_of(cluster.chat()) == "fallback"
    opened_hits = len(primary_hits(fake_upstream))
    assert opened_hits == 2

    # Four clients at once for a little over three cooldowns, spread over every process.
    providers, errors = [], []
    stop_at = time.monotonic() + 3.3 * cooldown

    def client():
        while time.monotonic() < stop_at:
            try:
                providers.append(provider_of(cluster.chat()))
            except AssertionError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    # (A loaded 2-core machine serves only a few requests a second here; what matters is that they never stop.)
    assert len(providers) >= 8 and set(providers) == {"fallback"}
    probes = primary_hits(fake_upstream)[opened_hits:]
    # One probe per cooldown across all processes: three cooldowns end in the window (the last maybe just).
    assert 2 <= len(probes) <= 4, probes
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert all(gap >= 0.9 * cooldown for gap in gaps), gaps


def test_traffic_returns_to_the_recovered_primary_within_one_cooldown(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    cooldown = 1.0
    # Retries allowed: a probe must still be a single attempt (its failure re-opens the breaker at once).
    make_routing(*primary_and_fallback(fake_upstream, fallback_upstream, breaker_cooldown_s=cooldown, max_retries=2))
    cluster = start_cluster()
    fake_upstream.default = status(503)
    for _ in range(2):
        assert provider_of(cluster.chat()) == "fallback"

    fake_upstream.default = ok()
    recovered_at = time.monotonic()  # the breaker opened before this, so it half-opens before recovered_at + cooldown
    while True:
        started = time.monotonic()
        if provider_of(cluster.chat()) == "primary":
            break
        assert started < recovered_at + cooldown + 0.3, "traffic did not return within one cooldown"
        time.sleep(0.05)
    # Closed again for every process: the next requests all go to the primary.
    assert [provider_of(cluster.chat()) for _ in range(4)] == ["primary"] * 4


def test_provider_answering_402_is_skipped_for_credit_cooldown(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    credit_cooldown = 3.0
    # Two routes on the credit-less provider: the 402 on the first takes the whole provider out.
    make_routing(
        upstream(
            fake_upstream,
            tier="free",
            name="primary",
            upstream_model="model-a",
            max_retries=0,
            breaker_failures=3,
            breaker_cooldown_s=0.2,
            credit_cooldown_s=credit_cooldown,
        ),
        upstream(fake_upstream, tier="free", name="primary", upstream_model="model-b"),
        upstream(fallback_upstream, tier="premium", name="fallback", max_retries=0),
    )
    cluster = start_cluster()
    fake_upstream.script(status(402, code="insufficient_credits"))
    sent_at = time.monotonic()  # the breaker opens between these two instants
    response = cluster.chat()
    answered_at = time.monotonic()
    assert provider_of(response) == "fallback"
    assert response.headers["x-rainymodel-fallback-reason"] == "credits_exhausted"
    assert [r.body["model"] for r in fake_upstream.requests.chat()] == ["model-a"]

    # Far longer than the ordinary breaker cooldown, shorter than the credit cooldown: still skipped (the margin
    # leaves room for a slow request to reach the server on a loaded machine).
    while time.monotonic() < sent_at + credit_cooldown - 0.8:
        assert provider_of(cluster.chat()) == "fallback"
        time.sleep(0.1)
    assert len(fake_upstream.requests.chat()) == 1

    time.sleep(max(0.0, answered_at + credit_cooldown + 0.1 - time.monotonic()))
    assert provider_of(cluster.chat()) == "primary"


def test_429_with_retry_after_7_keeps_the_route_out_for_7_seconds(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    make_routing(*primary_and_fallback(fake_upstream, fallback_upstream, breaker_failures=3, breaker_cooldown_s=0.2))
    cluster = start_cluster()
    fake_upstream.script(status(429, retry_after=7))
    sent_at = time.monotonic()  # the route is taken out between these two instants
    response = cluster.chat()
    answered_at = time.monotonic()
    assert provider_of(response) == "fallback"
    assert response.headers["x-rainymodel-fallback-reason"] == "http_429"

    while time.monotonic() < sent_at + 7 - 0.8:
        assert provider_of(cluster.chat()) == "fallback"
        time.sleep(0.25)
    assert len(fake_upstream.requests.chat()) == 1

    time.sleep(max(0.0, answered_at + 7.1 - time.monotonic()))
    assert provider_of(cluster.chat()) == "primary"


def test_every_breaker_open_gives_503_no_available_route_with_retry_after(fake_upstream, make_routing, start_cluster):
    make_routing(
        upstream(fake_upstream, tier="free", name="only", max_retries=0, breaker_failures=1, breaker_cooldown_s=5.0)
    )
    cluster = start_cluster()
    fake_upstream.default = status(503)
    first = cluster.chat()
    assert first.status_code == 502 and first.json()["error"]["code"] == "all_upstreams_failed"

    second = cluster.chat()
    assert second.status_code == 503, second.text
    assert second.json()["error"]["code"] == "no_available_route"
    assert 1 <= int(second.headers["Retry-After"]) <= 5
    assert len(fake_upstream.requests.chat()) == 1


def test_client_errors_never_open_the_breaker(fake_upstream, make_routing, start_cluster):
    make_routing(
        upstream(fake_upstream, tier="free", name="only", max_retries=0, breaker_failures=1, breaker_cooldown_s=30)
    )
    cluster = start_cluster()
    fake_upstream.script(status(400, code="invalid_value"), status(422), status(413))
    assert [cluster.chat().status_code for _ in range(3)] == [400, 422, 413]
    assert cluster.chat().status_code == 200


def test_ready_reports_open_breakers_and_admin_reset_closes_them(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    from routing import breakers

    routing = make_routing(
        *primary_and_fallback(fake_upstream, fallback_upstream, breaker_failures=1, breaker_cooldown_s=30)
    )
    cluster = start_cluster()
    fake_upstream.default = status(502)
    assert provider_of(cluster.chat()) == "fallback"
    route_id = str(routing.routes[0].id)

    for server in cluster.servers:
        ready = httpx.get(server.url + "/health/ready", headers=MASTER_KEY_HEADERS, timeout=10).json()
        route = ready["checks"]["breakers"]["routes"][route_id]
        assert route["state"] == "open" and route["last_reason"] == "http_502"
        assert ready["checks"]["breakers"]["providers"]["primary"]["state"] == "closed"

    if len(cluster.servers) == 1:
        return  # the in-process store of a single server cannot be reset from this test process
    fake_upstream.default = ok()
    breakers.reset_sync(route_id=routing.routes[0].id)
    assert provider_of(cluster.chat(server=0)) == "primary"
    assert provider_of(cluster.chat(server=1)) == "primary"


# --- one key cannot switch off a shared upstream -------------------------------------------------------------------

POISON = "please crash the model"
POISON_CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": f"hello, {POISON}"}]}


class PoisonedUpstream(FakeUpstream):
    """A fake upstream that answers 500 to any request whose messages contain POISON, and as scripted otherwise:
    the content of one customer's requests, not the upstream, is what fails."""

    async def _perform(self, b: Behaviour, request, reader, writer, kind: str = "chat") -> bool:
        if POISON in str(request.messages):
            b = status(500, message="The server had an error processing your request.")
        return await super()._perform(b, request, reader, writer, kind)


@pytest.fixture
def poisoned_upstream():
    with PoisonedUpstream() as fake:
        yield fake


def test_one_keys_poison_requests_do_not_move_other_keys_to_premium(
    poisoned_upstream, fallback_upstream, make_routing, start_cluster, api_key
):
    make_routing(*primary_and_fallback(poisoned_upstream, fallback_upstream, breaker_failures=2, breaker_cooldown_s=30))
    _, key_b = api_key(name="key-b")
    cluster = start_cluster()
    last = len(cluster.servers) - 1
    assert provider_of(cluster.chat(server=last, key=key_b)) == "primary"  # B uses the free route

    # A sends breaker_failures poison requests in a row, spread over the processes, then B asks through every
    # process; three rounds. B keeps being served by the primary.
    for _ in range(3):
        for server in (0, last):
            response = cluster.chat(server=server, body=POISON_CHAT)
            assert provider_of(response) == "fallback"  # A's own answer comes from premium
        for server in range(len(cluster.servers)):
            response = cluster.chat(server=server, key=key_b)
            assert provider_of(response) == "primary"
            assert "x-rainymodel-fallback-reason" not in response.headers
    # A's key breaker took the primary out for A alone after breaker_failures of its failures.
    assert sum(POISON in str(r.messages) for r in poisoned_upstream.requests.chat()) == 2
    response = cluster.chat(server=0)  # even A's plain requests skip the primary for the cooldown
    assert provider_of(response) == "fallback" and "x-rainymodel-fallback-reason" not in response.headers

    for server in cluster.servers:
        ready = httpx.get(server.url + "/health/ready", headers=MASTER_KEY_HEADERS, timeout=10).json()
        assert all(route["state"] == "closed" for route in ready["checks"]["breakers"]["routes"].values())


def test_an_outage_seen_by_two_keys_opens_the_breaker_within_breaker_failures(
    fake_upstream, fallback_upstream, make_routing, start_cluster, api_key
):
    make_routing(*primary_and_fallback(fake_upstream, fallback_upstream, breaker_failures=2, breaker_cooldown_s=30))
    _, key_b = api_key(name="key-b")
    _, key_c = api_key(name="key-c")
    cluster = start_cluster()
    last = len(cluster.servers) - 1
    # Both keys use the free route, so neither is alone on it.
    assert provider_of(cluster.chat(server=0)) == "primary"
    assert provider_of(cluster.chat(server=last, key=key_b)) == "primary"
    before = len(primary_hits(fake_upstream))

    fake_upstream.default = status(500)
    assert provider_of(cluster.chat(server=0)) == "fallback"
    assert provider_of(cluster.chat(server=last, key=key_b)) == "fallback"
    assert len(primary_hits(fake_upstream)) == before + 2  # breaker_failures reached, from two keys: open

    for server, key in [(0, key_c), (last, None), (0, key_b)]:
        response = cluster.chat(server=server, key=key)
        assert provider_of(response) == "fallback"
        assert "x-rainymodel-fallback-reason" not in response.headers  # the primary was not even tried
    assert len(primary_hits(fake_upstream)) == before + 2


def test_a_single_key_deployment_still_opens_the_breaker_on_an_outage(
    fake_upstream, fallback_upstream, make_routing, start_cluster
):
    master = "rm-master-" + "x" * 32
    routing = make_routing(
        *primary_and_fallback(fake_upstream, fallback_upstream, breaker_failures=2, breaker_cooldown_s=30)
    )
    cluster = start_cluster(env={"RAINYMODEL_MASTER_KEY": master})
    last = len(cluster.servers) - 1
    assert provider_of(cluster.chat(server=0, key=master)) == "primary"  # the master key counts as a key

    fake_upstream.default = status(500)
    assert provider_of(cluster.chat(server=0, key=master)) == "fallback"
    assert provider_of(cluster.chat(server=last, key=master)) == "fallback"
    hits = len(primary_hits(fake_upstream))

    response = cluster.chat(server=last, key=master)
    assert provider_of(response) == "fallback" and "x-rainymodel-fallback-reason" not in response.headers
    assert len(primary_hits(fake_upstream)) == hits
    for server in cluster.servers:  # open for everyone, not only for that key
        ready = httpx.get(
            server.url + "/health/ready", headers={"Authorization": f"Bearer {master}"}, timeout=10
        ).json()
        assert ready["checks"]["breakers"]["routes"][str(routing.routes[0].id)]["state"] == "open"
