"""What a user's limits (issue 14) add to admit + settle (docs/limits.md, "Per-user limits").

Calls `limits.admit` and `limits.settle` the way the request path does, one request after another in one process,
against Redis, for a key with rpm, tpm and max_concurrent, and for the same key whose owner has the same three
limits (so every request also counts against the user), and prints the mean time per admit + settle.

    .venv/bin/python bench/user_limits_cost.py --redis-url redis://127.0.0.1:6379/14

It flushes that Redis database's RainyModel keys before and after: give it a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def per_request_us(limits, key, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        admission = await limits.admit(key, estimated_tokens=10)
        await limits.settle(admission, tokens=10, cost_usd=0)
    return (time.perf_counter() - start) / n * 1e6


async def main(redis_url: str, n: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings_test")
    import django

    django.setup()
    import limits
    from limits import base
    from rainymodel_site.shared_state import RedisState
    from routing.snapshot import UserLimitsInfo
    from tests.limits.conftest import make_key

    store = RedisState(redis_url)
    store.flush_sync()
    base.store = lambda: store
    try:
        big = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_concurrent": 100}
        user = UserLimitsInfo(user_id=1, username="bench", quotas=(), **big)
        cases = {"key limits only": make_key(**big), "key + user limits": replace(make_key(**big), owner_limits=user)}
        for key in cases.values():  # warm the connection pool
            await per_request_us(limits, key, 200)
        for label, key in cases.items():
            print(f"{label}: {await per_request_us(limits, key, n):.0f} µs per admit + settle")
    finally:
        store.flush_sync()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.redis_url, args.n))
