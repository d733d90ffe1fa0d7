"""Plain-data factories shared by tests: snapshot objects (providers, routes, aliases, keys, snapshots) built
without a database. Defaults are the dullest valid values; a test names what it cares about."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from routing.snapshot import MASTER_KEY_INFO, AliasInfo, KeyInfo, PolicyInfo, ProviderInfo, RouteInfo, Snapshot

_key_ids = itertools.count(800_000)


def make_provider(
    name: str = "p1",
    *,
    failures: int = 2,
    cooldown: float = 0.5,
    credit: float = 5.0,
    tier: str = "free",
    base_url: str = "http://127.0.0.1:9/v1",
    **more,
) -> ProviderInfo:
    """A provider whose base URL refuses connections unless one is given."""
    fields: dict[str, Any] = dict(
        name=name,
        kind="openai",
        tier=tier,
        base_url=base_url,
        api_key="",
        extra_headers=(),
        enabled=True,
        connect_timeout_s=1,
        first_token_timeout_s=1,
        idle_timeout_s=1,
        request_timeout_s=1,
        max_retries=0,
        breaker_failures=failures,
        breaker_cooldown_s=cooldown,
        credit_cooldown_s=credit,
    )
    fields.update(more)
    return ProviderInfo(**fields)


def make_route(route_id: int, provider: ProviderInfo | None = None, **more) -> RouteInfo:
    fields: dict[str, Any] = dict(
        id=route_id,
        alias="a",
        provider=provider or make_provider(),
        upstream_model=f"m{route_id}",
        position=route_id,
        weight=1,
        enabled=True,
        context_window=None,
        supports_prefill=False,
        input_price_per_mtok=0,
        output_price_per_mtok=0,
    )
    fields.update(more)
    return RouteInfo(**fields)


def make_alias(
    name: str = "rainymodel/auto", routes=(), *, enabled: bool = True, default_policy: str | None = None
) -> AliasInfo:
    return AliasInfo(
        name=name,
        description="",
        enabled=enabled,
        listed=True,
        default_policy=default_policy,
        routes=tuple(routes),
        created=0,
    )


def make_key(key_id: int | None = None, **more) -> KeyInfo:
    """A live key with no limits, allowed everything; `key_id` defaults to a fresh id."""
    key_id = next(_key_ids) if key_id is None else key_id
    fields: dict[str, Any] = dict(
        id=key_id,
        name=f"key-{key_id}",
        prefix=f"rm-{key_id}",
        hashed_key="",
        expires_at=None,
        revoked=False,
        allowed_aliases=frozenset(),
        allowed_policies=(),
        default_policy=None,
        rpm_limit=None,
        tpm_limit=None,
        max_concurrent=None,
        quotas=(),
    )
    fields.update(more)
    return KeyInfo(**fields)


def make_master_key(**more) -> KeyInfo:
    """The master key's view, with fields replaced (e.g. an id, a prefix)."""
    return replace(MASTER_KEY_INFO, **more)


def make_snapshot(
    aliases=(),
    policies: tuple[PolicyInfo, ...] = (),
    *,
    catch_all: str | None = None,
    keys=(),
    providers=(),
    version: int = 1,
) -> Snapshot:
    return Snapshot(
        version=version,
        providers={p.name: p for p in providers},
        aliases={a.name: a for a in aliases},
        policies={p.name: p for p in policies},
        default_policy=next((p.name for p in policies if p.is_default), None),
        catch_all_alias=catch_all,
        keys_by_prefix={k.prefix: k for k in keys},
    )
