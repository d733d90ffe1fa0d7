"""Pure routing decisions: model name -> alias, request -> policy, alias + policy -> ordered chain of routes.

Plain functions over snapshot dataclasses: no database, no network, no clock. They raise `ApiError` with the
SPEC's codes so the request path can answer the client directly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import groupby

from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import ApiError
from routing.snapshot import AliasInfo, KeyInfo, PolicyInfo, RouteInfo, Snapshot

NAMESPACE = "rainymodel/"


def resolve_alias(snap: Snapshot, model: str, key: KeyInfo) -> AliasInfo:
    """An enabled alias with exactly that name, else the catch-all for names outside `rainymodel/`, else 404.
    A key limited to other aliases gets 403 `model_not_allowed`."""
    alias = snap.aliases.get(model)
    if alias is None or not alias.enabled:
        alias = None
        if not model.startswith(NAMESPACE) and snap.catch_all_alias:
            candidate = snap.aliases.get(snap.catch_all_alias)
            if candidate is not None and candidate.enabled:
                alias = candidate
    if alias is None:
        raise ApiError(404, codes.MODEL_NOT_FOUND, f"The model '{model}' does not exist.", param="model")
    if key.allowed_aliases and alias.name not in key.allowed_aliases:
        raise ApiError(
            403, codes.MODEL_NOT_ALLOWED, f"This API key may not use the model '{alias.name}'.", param="model"
        )
    return alias


def resolve_policy(snap: Snapshot, header: str | None, key: KeyInfo, alias: AliasInfo) -> PolicyInfo:
    """The policy of one request (SPEC §5.3): the `X-RainyModel-Policy` header (case-insensitive; the keyword
    `default` means the global default policy), else the key's default, else (for a key limited to some policies)
    the first of its allowed policies that exists, else the alias's default, else the global default."""
    requested = (header or "").strip().lower()
    if requested == "default":
        name = (snap.default_policy or "").lower()
    elif requested:
        name = requested
    else:
        first_allowed = next((p for p in key.allowed_policies if p in snap.policies), None)
        name = (key.default_policy or first_allowed or alias.default_policy or snap.default_policy or "").lower()
    policy = snap.policies.get(name)
    if policy is None:
        raise ApiError(
            400, codes.UNKNOWN_POLICY, _unknown_policy_message(snap, header, name), param="X-RainyModel-Policy"
        )
    if key.allowed_policies and policy.name.lower() not in key.allowed_policies:
        raise ApiError(
            403,
            codes.POLICY_NOT_ALLOWED,
            f"This API key may not use the policy '{policy.name}'.",
            param="X-RainyModel-Policy",
        )
    return policy


def _unknown_policy_message(snap: Snapshot, header: str | None, name: str) -> str:
    valid = ", ".join(sorted(p.name for p in snap.policies.values()))
    names = f"Valid policies: {valid}." if valid else "No policies are configured."
    keyword = "send 'default' (or no header) for the default policy"
    if header and header.strip().lower() != "default":
        return f"Unknown policy '{header.strip()}'. {names} The header is case-insensitive; {keyword}."
    # Nothing usable was asked for: the configured defaults name no existing policy.
    wanted = f"the default policy '{name}' does not exist" if name else "no default policy is configured"
    return f"No policy to use: {wanted}. {names} Name one in the X-RainyModel-Policy header."


_RNG = random.Random()  # weighted draws when no generator is given (tests pass their own)


def build_chain(alias: AliasInfo, policy: PolicyInfo, rng: random.Random | None = None) -> list[RouteInfo]:
    """The alias's enabled routes on enabled providers in the policy's tiers: by tier order, then position;
    routes sharing tier and position are ordered by a weighted draw (each is first with probability weight/total)."""
    draw = rng if rng is not None else _RNG
    tier_rank = {tier: i for i, tier in enumerate(policy.tiers)}
    usable = [r for r in alias.routes if r.enabled and r.provider.enabled and r.provider.tier in tier_rank]
    usable.sort(key=lambda r: (tier_rank[r.provider.tier], r.position))
    chain: list[RouteInfo] = []
    for _, group in groupby(usable, key=lambda r: (tier_rank[r.provider.tier], r.position)):
        chain.extend(weighted_order(list(group), draw))
    return chain


def weighted_order(routes: Sequence[RouteInfo], rng: random.Random) -> list[RouteInfo]:
    """Weighted random order without replacement."""
    if len(routes) < 2:
        return list(routes)
    remaining = list(routes)
    ordered = []
    while remaining:
        total = sum(max(1, r.weight) for r in remaining)
        pick = rng.uniform(0, total)
        for i, route in enumerate(remaining):
            pick -= max(1, route.weight)
            if pick <= 0 or i == len(remaining) - 1:
                ordered.append(remaining.pop(i))
                break
    return ordered


def skip_for_context(chain: Sequence[RouteInfo], failed: RouteInfo) -> list[RouteInfo]:
    """After `failed` said context_length_exceeded: drop routes whose known context window is no larger."""
    if failed.context_window is None:
        return list(chain)
    return [r for r in chain if r.context_window is None or r.context_window > failed.context_window]


def for_endpoint(chain: Sequence[RouteInfo], endpoint: str) -> list[RouteInfo]:
    """The routes of `chain` that serve `endpoint` (a `routing.models.Endpoint` value), in the same order.
    A route with no `endpoints` configured serves every endpoint. Pure: the input is not changed."""
    return [r for r in chain if r.serves(endpoint)]


def chain_for_endpoint(alias: AliasInfo, chain: Sequence[RouteInfo], endpoint: str) -> list[RouteInfo]:
    """`for_endpoint(chain, endpoint)` for the request path: call it on `build_chain`'s result, before the breaker
    filter, and go on with what it returns.

    Raises `ApiError(400, "unsupported_endpoint", param="model")` naming the alias and the endpoint ("The model
    'rainymodel/embed' does not serve chat; it serves embeddings.") when the alias has routes but none of them,
    enabled or not and in any tier, is configured for `endpoint`: asking again will not help. When some route of
    the alias serves it but none is in `chain` (disabled, or in a tier the policy leaves out), the empty list is
    returned so the caller answers as for any empty chain (503 `no_available_route`); so is an alias with no
    routes at all."""
    served = for_endpoint(chain, endpoint)
    if served or not alias.routes or any(r.serves(endpoint) for r in alias.routes):
        return served
    offered = sorted({e for r in alias.routes for e in r.endpoints})
    raise ApiError(
        400,
        "unsupported_endpoint",
        f"The model '{alias.name}' does not serve {endpoint}; it serves {', '.join(offered)}.",
        param="model",
    )
