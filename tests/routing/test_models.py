"""Model validation gives staff a clear message (SPEC §3): what the admin and `routing import` both rely on."""

import pytest
from django.core.exceptions import ValidationError

from apikeys.models import APIKey, Quota
from routing.models import Alias, Policy, Provider, Route, RoutingSettings


def provider(**fields):
    values = {
        "name": "hf",
        "kind": "hf",
        "tier": "free",
        "base_url": "https://router.huggingface.co/v1",
        "api_key_env": "HF_TOKEN",
    }
    values.update(fields)
    return Provider(**values)


def messages_for(obj, field):
    with pytest.raises(ValidationError) as caught:
        obj.full_clean()
    return " ".join(caught.value.message_dict.get(field, []))


def test_a_complete_provider_is_valid(db):
    provider().full_clean()


@pytest.mark.parametrize("url", ["ftp://host/v1", "router.huggingface.co/v1", "https:///v1", "javascript:alert(1)"])
def test_provider_base_url_must_be_http_or_https_with_a_host(db, url):
    assert "http:// or https://" in messages_for(provider(base_url=url), "base_url")


def test_provider_base_url_must_end_in_v1(db):
    assert "must end in /v1" in messages_for(provider(base_url="https://openrouter.ai/api"), "base_url")


def test_provider_base_url_loses_its_trailing_slash(db):
    obj = provider(base_url="https://router.huggingface.co/v1/")
    obj.full_clean()
    assert obj.base_url == "https://router.huggingface.co/v1"


def test_provider_tier_comes_from_the_fixed_set(db):
    assert "not a valid choice" in messages_for(provider(tier="gold"), "tier")


def test_provider_kind_comes_from_the_fixed_set(db):
    assert "not a valid choice" in messages_for(provider(kind="anthropic"), "kind")


@pytest.mark.parametrize("secret", ["hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "sk-or-v1-0123abcd", "my token"])
def test_provider_api_key_env_refuses_what_looks_like_a_secret(db, secret):
    assert "not the secret itself" in messages_for(provider(api_key_env=secret), "api_key_env")


def test_provider_api_key_env_may_be_empty_for_keyless_servers(db):
    provider(api_key_env="").full_clean()


def test_provider_extra_headers_must_be_an_object_of_strings(db):
    assert "JSON object" in messages_for(provider(extra_headers=["X-Title"]), "extra_headers")
    assert "string value" in messages_for(provider(extra_headers={"X-Count": 3}), "extra_headers")


def test_provider_timeouts_must_be_positive(db):
    assert "greater than or equal to 0.001" in messages_for(provider(first_token_timeout_s=0), "first_token_timeout_s")


def test_provider_name_is_a_slug(db):
    assert messages_for(provider(name="open router"), "name")


def test_only_one_policy_may_be_the_default(db):
    Policy.objects.create(name="auto", tiers=["free", "internal", "premium"], is_default=True)
    second = Policy(name="premium", tiers=["premium"], is_default=True)
    assert "auto is already the default policy" in messages_for(second, "is_default")


def test_the_default_policy_may_be_saved_again(db):
    auto = Policy.objects.create(name="auto", tiers=["free"], is_default=True)
    auto.full_clean()


@pytest.mark.parametrize(
    "tiers, message",
    [
        (["free", "gold"], "Unknown tier(s) ['gold']"),
        ([], "cannot be blank"),
        (["free", "free"], "only once"),
        ("free", "at least one tier"),
    ],
)
def test_policy_tiers_come_from_the_fixed_set_once_each(db, tiers, message):
    assert message in messages_for(Policy(name="p", tiers=tiers), "tiers")


def test_policy_name_default_is_reserved_for_the_header(db):
    assert "reserved" in messages_for(Policy(name="default", tiers=["free"]), "name")


def test_alias_name_may_not_have_surrounding_spaces(db):
    assert "spaces" in messages_for(Alias(name=" rainymodel/auto"), "name")


@pytest.fixture
def alias_and_provider(db):
    return Alias.objects.create(name="rainymodel/auto"), provider().__class__.objects.create(
        name="hf", kind="hf", tier="free", base_url="https://router.huggingface.co/v1"
    )


def test_route_needs_an_upstream_model(alias_and_provider):
    alias, hf = alias_and_provider
    assert messages_for(Route(alias=alias, provider=hf, upstream_model=""), "upstream_model")
    assert "Name the model" in messages_for(Route(alias=alias, provider=hf, upstream_model="   "), "upstream_model")


def test_route_weight_is_at_least_one(alias_and_provider):
    alias, hf = alias_and_provider
    assert "greater than or equal to 1" in messages_for(
        Route(alias=alias, provider=hf, upstream_model="m", weight=0), "weight"
    )


def test_route_prices_are_not_negative(alias_and_provider):
    alias, hf = alias_and_provider
    route = Route(alias=alias, provider=hf, upstream_model="m", input_price_per_mtok=-1)
    assert "greater than or equal to 0" in messages_for(route, "input_price_per_mtok")


def test_route_tier_is_its_providers(alias_and_provider):
    alias, hf = alias_and_provider
    assert Route(alias=alias, provider=hf, upstream_model="m").tier == "free"


@pytest.mark.parametrize(
    "endpoints, message",
    [
        (["chat", "rerank"], "Unknown endpoint(s) ['rerank']; endpoints are chat, embeddings, completions"),
        (["Chat"], "Unknown endpoint(s) ['Chat']"),
        ("chat", "Endpoints must be a list of names"),
        ({"chat": True}, "Endpoints must be a list of names"),
        (["chat", "chat"], "Each endpoint may appear only once."),
    ],
)
def test_route_endpoints_are_known_names_once_each(alias_and_provider, endpoints, message):
    alias, hf = alias_and_provider
    assert message in messages_for(
        Route(alias=alias, provider=hf, upstream_model="m", endpoints=endpoints), "endpoints"
    )


def test_route_endpoints_empty_means_every_endpoint_and_keep_one_order(alias_and_provider):
    alias, hf = alias_and_provider
    route = Route(alias=alias, provider=hf, upstream_model="m")
    route.full_clean()
    assert route.endpoints == [] and all(route.serves(e) for e in ("chat", "embeddings", "completions"))
    route.endpoints = ["completions", "chat"]
    route.full_clean()
    assert route.endpoints == ["chat", "completions"]
    assert route.serves("completions") and not route.serves("embeddings")


def test_routing_settings_is_a_single_row(db):
    first = RoutingSettings.load()
    RoutingSettings().save()
    assert RoutingSettings.objects.count() == 1
    assert RoutingSettings.load().pk == first.pk == 1


def test_api_key_allowed_aliases_and_policies_must_exist(alias_and_provider):
    Policy.objects.create(name="free", tiers=["free"])
    key = APIKey(
        name="k",
        prefix="rm-abcdefghi",
        hashed_key="x" * 64,
        allowed_aliases=["rainymodel/auto", "rainymodel/nope"],
        allowed_policies=["FREE", "cheap"],
    )
    with pytest.raises(ValidationError) as caught:
        key.full_clean()
    assert caught.value.message_dict["allowed_aliases"] == ["No alias named 'rainymodel/nope'."]
    assert caught.value.message_dict["allowed_policies"] == ["No policy named 'cheap'."]


def test_api_key_default_policy_must_be_among_its_allowed_policies(db):
    free = Policy.objects.create(name="free", tiers=["free"])
    Policy.objects.create(name="premium", tiers=["premium"])
    key = APIKey(
        name="k", prefix="rm-abcdefghi", hashed_key="x" * 64, allowed_policies=["premium"], default_policy=free
    )
    assert "not among the allowed policies" in messages_for(key, "default_policy")


def test_quota_needs_at_least_one_limit(db):
    key = APIKey.objects.create(name="k", prefix="rm-abcdefghi", hashed_key="x" * 64)
    with pytest.raises(ValidationError, match="at least one of"):
        Quota(api_key=key, period="day").full_clean()
