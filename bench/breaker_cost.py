"""What the circuit breaker costs per attempt against the shared store (docs/shared-state.md).

Calls `routing.proxy.breaker` the way the request path does, in one process, against Redis (`--redis-url`) or the
in-process store (no `--redis-url`), and prints the mean time per call sequence:

- `healthy`: usable_routes + try_acquire + record_success on closed breakers, 20 API keys taking turns (the
  hot path; includes the activity marks, one per key, route and process every 5 s);
- `failure`: one record_failure, attributed to a key (route breaker, key breaker and activity read, then the
  compare-and-set), on a route whose threshold is never reached;
- `failure_contended`: the same with 20 failures of two keys recorded at once (compare-and-set retries).

    .venv/bin/python bench/breaker_cost.py --redis-url redis://127.0.0.1:6379/7

It flushes RainyModel's keys (`rm:*`) in that Redis database before and after: give it a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(redis_url: str | None):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings_test")
    import django

    django.setup()
    from rainymodel_site import shared_state

    shared_state._state = shared_state.RedisState(redis_url) if redis_url else shared_state.MemoryState()
    shared_state._state.flush_sync()
    return shared_state._state


def fixtures():
    from routing.snapshot import MASTER_KEY_INFO, ProviderInfo, RouteInfo

    provider = ProviderInfo(
        name="bench",
        kind="openai",
        tier="free",
        base_url="http://127.0.0.1:9/v1",
        api_key="",
        extra_headers=(),
        enabled=True,
        connect_timeout_s=1,
        first_token_timeout_s=1,
        idle_timeout_s=1,
        request_timeout_s=1,
        max_retries=0,
        breaker_failures=10**9,
        breaker_cooldown_s=15,
        credit_cooldown_s=3600,
    )
    routes = [
        RouteInfo(
            id=i,
            alias="a",
            provider=provider,
            upstream_model=f"m{i}",
            position=i,
            weight=1,
            enabled=True,
            context_window=None,
            supports_prefill=False,
            input_price_per_mtok=0,
            output_price_per_mtok=0,
        )
        for i in (1, 2)
    ]
    keys = [
        MASTER_KEY_INFO.__class__(
            **{**{f: getattr(MASTER_KEY_INFO, f) for f in MASTER_KEY_INFO.__slots__}, "id": i, "name": f"k{i}"}
        )
        for i in range(1, 21)
    ]
    return routes, keys


async def measure(n: int) -> dict[str, float]:
    from routing.proxy import breaker

    routes, keys = fixtures()
    out = {}

    started = time.perf_counter()
    for i in range(n):
        key = keys[i % len(keys)]
        usable, _ = await breaker.usable_routes(routes, key)
        await breaker.try_acquire(usable[0], key)
        await breaker.record_success(usable[0], key)
    out["healthy"] = (time.perf_counter() - started) / n

    started = time.perf_counter()
    for i in range(n):
        await breaker.record_failure(routes[1], "http_500", key=keys[i % 2])
    out["failure"] = (time.perf_counter() - started) / n

    rounds = max(1, n // 20)
    started = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(breaker.record_failure(routes[1], "http_500", key=keys[j % 2]) for j in range(20)))
    out["failure_contended"] = (time.perf_counter() - started) / (rounds * 20)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args(argv)
    store = setup(args.redis_url)
    try:
        results = asyncio.run(measure(args.n))
    finally:
        store.flush_sync()
    print(f"store: {'redis' if args.redis_url else 'memory'}, n={args.n}")
    for name, seconds in results.items():
        print(f"  {name:18s} {seconds * 1e6:8.0f} µs per call")


if __name__ == "__main__":
    main()
