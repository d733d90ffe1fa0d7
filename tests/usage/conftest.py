"""Fixtures for the usage tests: users who own keys, and request-log rows written through the real log writer.

`traffic` writes a known, varied set of rows (several keys, aliases, tiers, statuses; inside and outside the
default periods) with `usage.writer.write_batch`, so the rollups are exactly what production would hold, and
tests can compare what the pages show with SQL over RequestLog.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

ALIASES = ("rainymodel/auto", "rainymodel/code")
ROUTES = {  # tier -> (provider, model, input $/Mtok, output $/Mtok)
    "free": ("hf", "llama-70b", Decimal(0), Decimal(0)),
    "internal": ("ollama-primary", "qwen2.5:14b", Decimal(0), Decimal(0)),
    "premium": ("openrouter", "gpt-4o-mini", Decimal("0.15"), Decimal("0.60")),
}


def make_row(
    *,
    created_at,
    api_key=None,
    alias="rainymodel/auto",
    policy="auto",
    tier="free",
    status=200,
    prompt_tokens=100,
    completion_tokens=50,
    latency_ms=800,
    ttft_ms=None,
    fallback=False,
    error_code="",
    key_prefix=None,
    admitted=True,
    endpoint="chat",
) -> dict:
    provider, model, price_in, price_out = ROUTES.get(tier, ("", "", Decimal(0), Decimal(0)))
    cost = (prompt_tokens * price_in + completion_tokens * price_out) / Decimal(1_000_000)
    return {
        "id": "req_" + secrets.token_hex(12),
        "created_at": created_at,
        "endpoint": endpoint,
        "api_key_id": api_key.id if api_key else None,
        "key_prefix": key_prefix if key_prefix is not None else (api_key.prefix if api_key else ""),
        "requested_model": alias,
        "alias": alias,
        "policy": policy,
        "tier": tier,
        "provider": provider,
        "upstream_model": model,
        "status": status,
        "error_code": error_code,
        "admitted": admitted,
        "stream": ttft_ms is not None,
        "latency_ms": latency_ms,
        "ttft_ms": ttft_ms,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usage_estimated": False,
        "cost_usd": cost.quantize(Decimal("0.00000001")),
        "attempts": [],
        "fallback": fallback,
        "client_ip": "127.0.0.1",
        "user_agent": "test",
    }


def write(rows: list[dict]) -> None:
    from usage.writer import write_batch

    write_batch(rows)


@dataclass
class Traffic:
    staff: object
    alice: object
    bob: object
    alice_keys: list
    bob_key: object
    bob_secret: str  # the full key string of bob_key, for calling /v1/usage
    rows: list[dict]


@pytest.fixture
def users(db, django_user_model):
    staff = django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True)
    alice = django_user_model.objects.create_user("alice", password="alice-pass-123")
    bob = django_user_model.objects.create_user("bob", password="bob-pass-123")
    return staff, alice, bob


@pytest.fixture
def premium_routes(db):
    """Routing rows for the two aliases: a free route and a premium route (whose price defines the saving)."""
    from routing.models import Alias, Provider, Route

    providers = {
        tier: Provider.objects.create(name=name, kind="openai", tier=tier, base_url="http://127.0.0.1:9/v1")
        for tier, (name, *_rest) in ROUTES.items()
    }
    for alias_name in ALIASES:
        alias = Alias.objects.create(name=alias_name)
        for tier, (_, model, price_in, price_out) in ROUTES.items():
            Route.objects.create(
                alias=alias,
                provider=providers[tier],
                upstream_model=model,
                input_price_per_mtok=price_in,
                output_price_per_mtok=price_out,
            )
    return providers


@pytest.fixture
def traffic(users, api_key, premium_routes):
    """~400 rows: alice's two keys, bob's key, the master key and unauthenticated calls, over the last 40 days."""
    staff, alice, bob = users
    alice_key_1, _ = api_key(
        name="alice-laptop", owner=alice, quotas=[("day", "max_requests", 50), ("month", "max_tokens", 100_000)]
    )
    alice_key_2, _ = api_key(name="alice-ci", owner=alice)
    bob_key, bob_secret = api_key(name="bob-server", owner=bob)
    rnd = random.Random(6)
    now = timezone.now()
    rows = []
    for _ in range(400):
        # Ages from 1 minute to 40 days, denser in the last day.
        age = timedelta(minutes=rnd.choice([rnd.randint(1, 23 * 60), rnd.randint(1, 40 * 24 * 60)]))
        owner_key = rnd.choice([alice_key_1, alice_key_1, alice_key_2, bob_key, bob_key, None, "master"])
        tier = rnd.choice(["free", "free", "free", "internal", "premium"])
        status = rnd.choice([200] * 8 + [429, 502])
        ok = status == 200
        row = make_row(
            created_at=now - age,
            api_key=owner_key if owner_key not in (None, "master") else None,
            key_prefix="master" if owner_key == "master" else None,
            alias=rnd.choice(ALIASES),
            policy=rnd.choice(["auto", "free", "premium"]),
            tier=tier,
            status=status,
            prompt_tokens=rnd.randint(10, 4000) if ok else 0,
            completion_tokens=rnd.randint(5, 1500) if ok else 0,
            latency_ms=(latency := rnd.randint(30, 9000)),
            ttft_ms=min(rnd.randint(20, 2500), latency) if ok and rnd.random() < 0.6 else None,
            fallback=rnd.random() < 0.2,
            error_code="" if ok else "upstream_error",
        )
        rows.append(row)
    # Split into batches so the rollup upsert merges into existing rows, as it does in production.
    for start in range(0, len(rows), 97):
        write(rows[start : start + 97])
    return Traffic(
        staff=staff,
        alice=alice,
        bob=bob,
        alice_keys=[alice_key_1, alice_key_2],
        bob_key=bob_key,
        bob_secret=bob_secret,
        rows=rows,
    )
