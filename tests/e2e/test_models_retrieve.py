"""GET /v1/models/{id} (issue 12): the openai SDK's `models.retrieve`, filtered per key like the list."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes.routing_config import upstream


def test_retrieve_returns_the_same_object_as_the_list(fake_upstream, make_routing, api_key, proxy):
    routing = make_routing(upstream(fake_upstream))
    routing.routes[0].endpoints = ["chat", "embeddings"]
    routing.routes[0].save()
    from routing.config_version import bump_version

    bump_version()
    _, key = api_key()
    client = proxy.openai(key)
    raw = client.models.with_raw_response.retrieve("rainymodel/auto")
    model = raw.parse()
    assert (model.id, model.object, model.owned_by) == ("rainymodel/auto", "model", "rainymodel")
    listed = next(m for m in client.models.list().data if m.id == "rainymodel/auto")
    assert model.model_dump() == listed.model_dump()
    assert raw.http_response.json()["endpoints"] == ["chat", "embeddings"]
    assert raw.headers["x-request-id"]


def test_unknown_model_is_a_404_model_not_found(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    with pytest.raises(openai.NotFoundError) as missing:
        proxy.openai(key).models.retrieve("rainymodel/nope")
    assert missing.value.code == "model_not_found" and missing.value.type == "not_found_error"
    assert "rainymodel/nope" in missing.value.message
    # A catch-all alias serves chat for any name, but retrieve only knows the aliases themselves.
    with pytest.raises(openai.NotFoundError):
        proxy.openai(key).models.retrieve("gpt-4o")


def test_a_key_limited_to_other_aliases_gets_404(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    make_routing(upstream(fake_upstream), alias="rainymodel/other", catch_all=False)
    _, key = api_key(allowed_aliases=["rainymodel/other"])
    client = proxy.openai(key)
    assert client.models.retrieve("rainymodel/other").id == "rainymodel/other"
    with pytest.raises(openai.NotFoundError) as hidden:
        client.models.retrieve("rainymodel/auto")
    assert hidden.value.code == "model_not_found"


def test_disabled_and_unlisted_aliases_are_not_found(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream), alias="rainymodel/hidden", listed=False, catch_all=False)
    disabled = make_routing(upstream(fake_upstream), alias="rainymodel/off", catch_all=False)
    disabled.alias.enabled = False
    disabled.alias.save()
    from routing.config_version import bump_version

    bump_version()
    _, key = api_key()
    for name in ("rainymodel/hidden", "rainymodel/off"):
        with pytest.raises(openai.NotFoundError):
            proxy.openai(key).models.retrieve(name)


def test_retrieve_needs_a_key_and_get(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    anonymous = httpx.get(proxy.url + "/v1/models/rainymodel/auto")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    posted = httpx.post(proxy.url + "/v1/models/rainymodel/auto", headers={"Authorization": f"Bearer {key}"})
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"


def test_model_lookups_are_logged_once_each_as_models(fake_upstream, make_routing, api_key, proxy):
    make_routing(upstream(fake_upstream))
    api_key_row, key = api_key()
    client = proxy.openai(key)
    client.models.list()
    raw = client.models.with_raw_response.retrieve("rainymodel/auto")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("rainymodel/nope")
    anonymous = httpx.get(proxy.url + "/v1/models/rainymodel/auto")
    rows = proxy.logs(expected=4)
    assert [(r.endpoint, r.status, r.error_code) for r in rows] == [
        ("models", 200, ""),
        ("models", 200, ""),
        ("models", 404, "model_not_found"),
        ("models", 401, "invalid_api_key"),
    ]
    assert [r.requested_model for r in rows] == ["", "rainymodel/auto", "rainymodel/nope", "rainymodel/auto"]
    assert [r.api_key_id for r in rows[:3]] == [api_key_row.id] * 3
    assert rows[1].id == raw.headers["x-request-id"] and rows[3].id == anonymous.headers["x-request-id"]
    assert all(r.prompt_tokens == 0 and not r.admitted and not r.attempts for r in rows)
    assert not fake_upstream.requests
