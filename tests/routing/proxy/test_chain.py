"""routing/proxy/chain.py: model -> alias, policy resolution, chain order. Pure functions over snapshot data."""

import random
from collections import Counter

import pytest

from rainymodel_site.api_errors import ApiError
from routing.proxy.chain import build_chain, resolve_alias, resolve_policy, skip_for_context
from routing.snapshot import PolicyInfo
from tests.factories import make_alias, make_master_key, make_provider, make_route, make_snapshot


def provider(name, tier, enabled=True):
    return make_provider(name, tier=tier, enabled=enabled, failures=3, cooldown=1, credit=1)


def route(id, prov, position=0, **more):
    """Routes here share position 0 unless a test orders them."""
    return make_route(id, prov, position=position, **more)


FREE, INTERNAL, PREMIUM = provider("hf", "free"), provider("ollama", "internal"), provider("or", "premium")
AUTO = PolicyInfo("auto", ("free", "internal", "premium"), True)
PREMIUM_FIRST = PolicyInfo("premium", ("premium", "free", "internal"), False)
FREE_ONLY = PolicyInfo("free", ("free", "internal"), False)


alias = make_alias


def snap(aliases=(), policies=(AUTO, PREMIUM_FIRST, FREE_ONLY), catch_all=None):
    return make_snapshot(aliases, policies, catch_all=catch_all)


def key(**fields):
    return make_master_key(id=1, prefix="rm-abc", **fields)


def test_exact_alias_name_wins():
    a = alias()
    assert resolve_alias(snap([a]), "rainymodel/auto", key()) is a


def test_names_outside_namespace_go_to_catch_all():
    a = alias()
    assert resolve_alias(snap([a], catch_all="rainymodel/auto"), "gpt-4o", key()) is a


def test_unknown_name_inside_namespace_is_404_even_with_catch_all():
    with pytest.raises(ApiError) as err:
        resolve_alias(snap([alias()], catch_all="rainymodel/auto"), "rainymodel/nope", key())
    assert (err.value.status, err.value.code) == (404, "model_not_found")


def test_disabled_alias_is_not_found_without_catch_all():
    with pytest.raises(ApiError) as err:
        resolve_alias(snap([alias(enabled=False)]), "rainymodel/auto", key())
    assert err.value.code == "model_not_found"


def test_key_limited_to_other_aliases_gets_403():
    with pytest.raises(ApiError) as err:
        resolve_alias(snap([alias()]), "rainymodel/auto", key(allowed_aliases=frozenset({"rainymodel/chat"})))
    assert (err.value.status, err.value.code) == (403, "model_not_allowed")


def test_policy_header_is_case_insensitive_and_default_means_global_default():
    s = snap([alias()])
    assert resolve_policy(s, "PREMIUM", key(), alias()).name == "premium"
    assert resolve_policy(s, "default", key(default_policy="premium"), alias()).name == "auto"


def test_policy_falls_back_key_then_alias_then_global():
    s = snap([alias()])
    assert resolve_policy(s, None, key(default_policy="free"), alias(default_policy="premium")).name == "free"
    assert resolve_policy(s, None, key(), alias(default_policy="premium")).name == "premium"
    assert resolve_policy(s, None, key(), alias()).name == "auto"


def test_unknown_policy_lists_valid_names():
    with pytest.raises(ApiError) as err:
        resolve_policy(snap([alias()]), "cheap", key(), alias())
    assert (err.value.status, err.value.code) == (400, "unknown_policy")
    assert "auto" in err.value.message and "premium" in err.value.message


def test_unknown_policy_lists_real_policies_and_the_default_keyword_apart():
    with pytest.raises(ApiError) as err:
        resolve_policy(snap([alias()]), "Cheap", key(), alias())
    assert err.value.message == (
        "Unknown policy 'Cheap'. Valid policies: auto, free, premium. The header is "
        "case-insensitive; send 'default' (or no header) for the default policy."
    )


def test_missing_default_policy_says_so_instead_of_naming_an_empty_policy():
    with pytest.raises(ApiError) as err:
        resolve_policy(snap([alias()], policies=(PREMIUM_FIRST, FREE_ONLY)), None, key(), alias())
    assert err.value.code == "unknown_policy"
    assert err.value.message.startswith(
        "No policy to use: no default policy is configured. Valid policies: free, premium."
    )


def test_key_limited_to_policies_without_default_uses_its_first_allowed_policy():
    s = snap([alias()])
    assert resolve_policy(s, None, key(allowed_policies=("premium", "free")), alias()).name == "premium"
    assert (
        resolve_policy(s, None, key(allowed_policies=("free", "premium")), alias(default_policy="premium")).name
        == "free"
    )
    # The key's own default still comes first, and a header still wins.
    assert (
        resolve_policy(s, None, key(allowed_policies=("free", "premium"), default_policy="premium"), alias()).name
        == "premium"
    )
    assert resolve_policy(s, "FREE", key(allowed_policies=("premium", "free")), alias()).name == "free"


def test_first_allowed_policy_skips_names_that_no_longer_exist():
    s = snap([alias()])
    assert resolve_policy(s, None, key(allowed_policies=("gone", "free")), alias()).name == "free"


def test_policy_not_allowed_for_key_is_403():
    with pytest.raises(ApiError) as err:
        resolve_policy(snap([alias()]), "premium", key(allowed_policies=("free",)), alias())
    assert (err.value.status, err.value.code) == (403, "policy_not_allowed")


def test_chain_follows_policy_tier_order_then_position():
    routes = [route(1, PREMIUM), route(2, INTERNAL, position=1), route(3, INTERNAL, position=0), route(4, FREE)]
    assert [r.id for r in build_chain(alias(routes=routes), AUTO)] == [4, 3, 2, 1]
    assert [r.id for r in build_chain(alias(routes=routes), PREMIUM_FIRST)] == [1, 4, 3, 2]


def test_chain_leaves_out_unlisted_tiers_disabled_routes_and_disabled_providers():
    off = provider("off", "free", enabled=False)
    routes = [route(1, PREMIUM), route(2, FREE, enabled=False), route(3, off), route(4, INTERNAL)]
    assert [r.id for r in build_chain(alias(routes=routes), FREE_ONLY)] == [4]


def test_equal_positions_share_traffic_by_weight():
    routes = [route(1, FREE, weight=3), route(2, FREE, weight=1)]
    rng = random.Random(7)
    firsts = Counter(build_chain(alias(routes=routes), AUTO, rng)[0].id for _ in range(4000))
    assert 0.70 < firsts[1] / 4000 < 0.80
    assert all(len(build_chain(alias(routes=routes), AUTO, rng)) == 2 for _ in range(10))


def test_context_skip_drops_routes_with_no_larger_known_window():
    small, same, big, unknown = (
        route(1, FREE, context_window=8000),
        route(2, FREE, context_window=8000),
        route(3, FREE, context_window=32000),
        route(4, FREE),
    )
    assert [r.id for r in skip_for_context([same, big, unknown], small)] == [3, 4]
    assert [r.id for r in skip_for_context([same, big], route(9, FREE))] == [2, 3]


# --- which routes serve an endpoint (issue 12) --------------------------------------------------------------------


def serving(id, prov, *endpoints, **fields):
    from dataclasses import replace

    return replace(route(id, prov, **fields), endpoints=frozenset(endpoints))


def test_a_route_without_endpoints_serves_every_endpoint():
    r = route(1, FREE)
    assert all(r.serves(e) for e in ("chat", "embeddings", "completions"))
    coder = serving(2, FREE, "chat", "completions")
    assert coder.serves("chat") and coder.serves("completions") and not coder.serves("embeddings")


def test_for_endpoint_keeps_the_serving_routes_in_chain_order():
    from routing.proxy.chain import for_endpoint

    chain = [
        serving(1, FREE, "chat"),
        route(2, FREE),
        serving(3, INTERNAL, "embeddings"),
        serving(4, PREMIUM, "chat", "embeddings"),
    ]
    assert [r.id for r in for_endpoint(chain, "embeddings")] == [2, 3, 4]
    assert [r.id for r in for_endpoint(chain, "chat")] == [1, 2, 4]
    assert [r.id for r in for_endpoint(chain, "completions")] == [2]
    assert [r.id for r in chain] == [1, 2, 3, 4]  # the input is left alone


def test_chain_for_endpoint_refuses_an_alias_none_of_whose_routes_serve_it():
    from routing.proxy.chain import chain_for_endpoint

    a = alias("rainymodel/embed", [serving(1, INTERNAL, "embeddings"), serving(2, PREMIUM, "embeddings")])
    with pytest.raises(ApiError) as err:
        chain_for_endpoint(a, build_chain(a, AUTO), "chat")
    assert (err.value.status, err.value.code, err.value.param) == (400, "unsupported_endpoint", "model")
    assert err.value.message == "The model 'rainymodel/embed' does not serve chat; it serves embeddings."
    assert [r.id for r in chain_for_endpoint(a, build_chain(a, AUTO), "embeddings")] == [1, 2]


def test_chain_for_endpoint_leaves_an_empty_chain_to_the_usual_no_route_answer():
    from routing.proxy.chain import chain_for_endpoint

    # A route serves it but the policy leaves its tier out, or it is disabled: not the endpoint's fault.
    a = alias(
        "rainymodel/embed",
        [
            serving(1, PREMIUM, "embeddings"),
            serving(2, FREE, "chat"),
            serving(3, INTERNAL, "embeddings", enabled=False),
        ],
    )
    assert chain_for_endpoint(a, build_chain(a, FREE_ONLY), "embeddings") == []
    assert chain_for_endpoint(alias("rainymodel/empty"), [], "embeddings") == []


def test_an_alias_serves_the_endpoints_of_its_routes_in_one_order():
    assert alias("a", [serving(1, FREE, "embeddings"), serving(2, FREE, "completions", "chat")]).endpoints == (
        "chat",
        "embeddings",
        "completions",
    )
    assert alias("a", [serving(1, FREE, "embeddings")]).endpoints == ("embeddings",)
    assert alias("a", [serving(1, FREE, "embeddings"), route(2, PREMIUM)]).endpoints == (
        "chat",
        "embeddings",
        "completions",
    )  # a route naming none serves every endpoint
    assert alias("a", []).endpoints == ()
