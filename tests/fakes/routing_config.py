"""Routing configuration for tests: providers, an alias with its routes, the standard policies, written through the
ORM exactly as the admin would, then a config-version bump so running servers pick it up.

    routing = make_routing(upstream(fake_a, tier="free"), upstream(fake_b, tier="premium", supports_prefill=True))
    routing.alias.name  -> "rainymodel/auto"

Never used by RainyModel itself; it only builds rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROVIDER_FIELDS = {
    "name",
    "kind",
    "tier",
    "base_url",
    "api_key_env",
    "extra_headers",
    "connect_timeout_s",
    "first_token_timeout_s",
    "idle_timeout_s",
    "request_timeout_s",
    "max_retries",
    "breaker_failures",
    "breaker_cooldown_s",
    "credit_cooldown_s",
}
ROUTE_FIELDS = {
    "endpoints",
    "upstream_model",
    "position",
    "weight",
    "enabled",
    "context_window",
    "supports_prefill",
    "input_price_per_mtok",
    "output_price_per_mtok",
}
STANDARD_POLICIES = (
    # name, tiers, is_default
    ("auto", ["free", "internal", "premium"], True),
    ("free", ["free"], False),
    ("premium", ["premium"], False),
)


def upstream(fake_or_url, tier: str = "free", **fields) -> dict:
    """One route of the chain: a fake upstream (or a base URL) plus Provider and Route fields.

    Provider fields: name, kind, base_url, api_key_env, extra_headers, the timeouts, max_retries, breaker settings,
    and `provider_enabled`. Route fields: upstream_model (default "fake-model"), position, weight, `enabled`,
    context_window, supports_prefill, prices. Routes naming the same provider `name` share one Provider row.
    """
    base_url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.base_url
    unknown = set(fields) - PROVIDER_FIELDS - ROUTE_FIELDS - {"provider_enabled"}
    if unknown:
        raise TypeError(f"unknown route/provider field(s): {sorted(unknown)}")
    return {"base_url": base_url, "tier": tier, **fields}


@dataclass
class Routing:
    alias: object
    providers: list = field(default_factory=list)
    routes: list = field(default_factory=list)
    policies: dict = field(default_factory=dict)


def ensure_standard_policies() -> dict:
    from routing.models import Policy

    policies = {}
    for name, tiers, is_default in STANDARD_POLICIES:
        policies[name], _ = Policy.objects.get_or_create(name=name, defaults={"tiers": tiers, "is_default": is_default})
    return policies


def make_routing(
    *routes: dict,
    alias: str = "rainymodel/auto",
    catch_all: bool = True,
    listed: bool = True,
    alias_policy: str | None = None,
    bump: bool = True,
) -> Routing:
    """Create (or extend) `alias` with these routes, in order, plus the policies auto (default), free and premium.

    Routes given without `position` get their index, so the chain order is the argument order within a tier.
    With `catch_all`, model names outside rainymodel/ resolve to this alias.
    """
    from routing.config_version import bump_version
    from routing.models import Alias, Provider, Route, RoutingSettings

    policies = ensure_standard_policies()
    alias_obj, _ = Alias.objects.get_or_create(name=alias, defaults={"listed": listed})
    if alias_policy:
        alias_obj.default_policy = policies[alias_policy]
        alias_obj.save()
    result = Routing(alias=alias_obj, policies=policies)
    for index, spec in enumerate(routes):
        spec = dict(spec)
        provider_values = {k: spec.pop(k) for k in list(spec) if k in PROVIDER_FIELDS}
        if "provider_enabled" in spec:
            provider_values["enabled"] = spec.pop("provider_enabled")
        provider_values.setdefault("kind", "openai")
        name = provider_values.pop("name", None) or f"{provider_values['tier']}-{Provider.objects.count() + 1}"
        provider, created = Provider.objects.get_or_create(name=name, defaults=provider_values)
        if not created and provider_values:
            for key, value in provider_values.items():
                setattr(provider, key, value)
        provider.full_clean()
        provider.save()
        spec.setdefault("upstream_model", "fake-model")
        spec.setdefault("position", index)
        route = Route(alias=alias_obj, provider=provider, **spec)
        route.full_clean()
        route.save()
        if provider not in result.providers:
            result.providers.append(provider)
        result.routes.append(route)
    if catch_all:
        settings_row = RoutingSettings.load()
        settings_row.catch_all_alias = alias_obj
        settings_row.save()
    if bump:
        bump_version()
    return result
