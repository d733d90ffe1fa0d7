"""Plain-data factories shared by tests: snapshot objects (providers, routes) built without a database."""

from __future__ import annotations

from routing.snapshot import ProviderInfo, RouteInfo


def make_provider(name: str = "p1", *, failures: int = 2, cooldown: float = 0.5, credit: float = 5.0,
                  tier: str = "free", base_url: str = "http://127.0.0.1:9/v1", **more) -> ProviderInfo:
    """A provider whose base URL refuses connections unless one is given."""
    fields = dict(
        name=name, kind="openai", tier=tier, base_url=base_url, api_key="", extra_headers=(), enabled=True,
        connect_timeout_s=1, first_token_timeout_s=1, idle_timeout_s=1, request_timeout_s=1, max_retries=0,
        breaker_failures=failures, breaker_cooldown_s=cooldown, credit_cooldown_s=credit,
    )
    fields.update(more)
    return ProviderInfo(**fields)


def make_route(route_id: int, provider: ProviderInfo | None = None, **more) -> RouteInfo:
    fields = dict(
        id=route_id, alias="a", provider=provider or make_provider(), upstream_model=f"m{route_id}",
        position=route_id, weight=1, enabled=True, context_window=None, supports_prefill=False,
        input_price_per_mtok=0, output_price_per_mtok=0,
    )
    fields.update(more)
    return RouteInfo(**fields)
