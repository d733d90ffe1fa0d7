"""What the 502/503 of a failed chain tell the operator (issue 9): a provider whose secret variable is not set on the
server, and routes skipped because their breaker was open; never URLs or secrets. And the startup warning that
names providers whose secret is missing before the first request fails."""

import httpx
import pytest

from tests.e2e.conftest import chat
from tests.fakes import upstream as fu
from tests.fakes.routing_config import upstream

FAST = {"connect_timeout_s": 0.5, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.5, "request_timeout_s": 2}
MISSING = "RAINYMODEL_TEST_UNSET_TOKEN"


def test_502_says_which_provider_secret_is_not_set(
    fake_upstream, second_upstream, make_routing, api_key, proxy, monkeypatch
):
    monkeypatch.delenv(MISSING, raising=False)
    monkeypatch.setenv("RAINYMODEL_TEST_SET_TOKEN", "sk-the-real-secret")
    fake_upstream.default = fu.status(401)
    second_upstream.default = fu.status(500)
    make_routing(
        upstream(fake_upstream, name="hf", api_key_env=MISSING, max_retries=0, **FAST),
        upstream(
            second_upstream,
            name="openrouter",
            tier="premium",
            api_key_env="RAINYMODEL_TEST_SET_TOKEN",
            max_retries=0,
            **FAST,
        ),
    )
    _, key = api_key()
    r = proxy.post(key, chat())
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert message == (
        "All upstream routes failed: hf/fake-model (http_401), openrouter/fake-model (http_500). "
        f"hf: {MISSING} is not set on the server."
    )
    assert "sk-the-real-secret" not in message and "127.0.0.1" not in message


def test_502_and_503_list_routes_skipped_because_their_breaker_was_open(
    fake_upstream, second_upstream, make_routing, api_key, proxy
):
    fake_upstream.default = fu.status(500)
    make_routing(
        upstream(fake_upstream, name="alpha", max_retries=0, breaker_failures=1, breaker_cooldown_s=60, **FAST),
        upstream(
            second_upstream,
            name="beta",
            tier="premium",
            max_retries=0,
            breaker_failures=1,
            breaker_cooldown_s=60,
            **FAST,
        ),
    )
    _, key = api_key()
    assert proxy.post(key, chat()).status_code == 200  # alpha fails (its breaker opens), beta answers

    second_upstream.default = fu.status(500)
    r = proxy.post(key, chat())
    assert r.status_code == 502
    assert r.json()["error"]["message"] == (
        "All upstream routes failed: beta/fake-model (http_500). Skipped (breaker open): alpha/fake-model."
    )

    r = proxy.post(key, chat())
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_available_route"
    message = r.json()["error"]["message"]
    assert message.endswith("right now. Skipped (breaker open): alpha/fake-model, beta/fake-model.")
    assert "127.0.0.1" not in message


def test_server_warns_once_at_start_about_providers_without_their_secret(
    fake_upstream, make_routing, rainymodel_server, monkeypatch
):
    monkeypatch.delenv(MISSING, raising=False)
    make_routing(
        upstream(fake_upstream, name="hf", api_key_env=MISSING),
        upstream(fake_upstream, name="off", api_key_env="RAINYMODEL_TEST_OFF_TOKEN", provider_enabled=False),
        upstream(fake_upstream, name="ollama", tier="internal"),
    )
    server = rainymodel_server(env={"RAINYMODEL_TEST_OFF_TOKEN": ""})
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    log = server.log_text()
    warnings = [line for line in log.splitlines() if "without their secret" in line]
    assert len(warnings) == 1, log
    assert "WARNING" in warnings[0] and f"hf: {MISSING} is not set on the server" in warnings[0]
    assert "off:" not in warnings[0] and "ollama" not in warnings[0]


@pytest.mark.parametrize("missing", [False, True])
def test_no_warning_when_every_enabled_provider_has_its_secret(fake_upstream, make_routing, rainymodel_server, missing):
    make_routing(upstream(fake_upstream, name="hf", api_key_env="RAINYMODEL_TEST_HF_TOKEN"))
    server = rainymodel_server(env={"RAINYMODEL_TEST_HF_TOKEN": "" if missing else "hf_secret_value"})
    log = server.log_text()
    assert ("without their secret" in log) is missing
    assert "hf_secret_value" not in log
