"""Time the log writer's batch (RequestLog insert + hourly/daily rollup upsert) on mixed traffic (not a test: run
by hand, see docs/usage.md).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rm_w3b SECRET_KEY=bench-secret \
        .venv/bin/python -m tests.usage.bench_writer [--batches 8] [--rows 1000] [--endpoints chat,embeddings]

Each batch is `--rows` synthetic-looking rows spread over 5 s (25 keys, 4 aliases, 3 tiers, 2xx/4xx/5xx), each row
given one of `--endpoints` at random, written with `usage.writer.write_batch` exactly as the writer thread does.
Prints the median and range of the warm batches (the first is dropped) and how many distinct rollup groups a
batch touched. Writes into the database it is given: use a scratch one.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import time
from datetime import timedelta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--endpoints", default="chat,embeddings,completions")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")
    import django

    django.setup()
    from django.utils import timezone

    from usage.rollups import summarise
    from usage.writer import write_batch

    endpoints = args.endpoints.split(",")
    rnd = random.Random(12)
    routes = [
        ("free", "hf", "llama-70b"),
        ("internal", "ollama-primary", "qwen2.5:14b"),
        ("premium", "openrouter", "gpt-4o-mini"),
    ]
    times, groups = [], []
    start = timezone.now()
    for batch_no in range(args.batches):
        base = start + timedelta(seconds=5 * batch_no)
        rows = []
        for _ in range(args.rows):
            tier, provider, model = rnd.choice(routes)
            status = rnd.choice([200] * 17 + [429, 502, 400])
            rows.append(
                {
                    "id": "req_" + secrets.token_hex(12),
                    "created_at": base + timedelta(seconds=rnd.random() * 5),
                    "endpoint": rnd.choice(endpoints),
                    "api_key_id": 10_000 + rnd.randrange(25),
                    "key_prefix": "rm-bench",
                    "requested_model": "rainymodel/auto",
                    "alias": f"rainymodel/a{rnd.randrange(4)}",
                    "policy": "auto",
                    "tier": tier,
                    "provider": provider,
                    "upstream_model": model,
                    "status": status,
                    "error_code": "" if status == 200 else "x",
                    "admitted": True,
                    "synthetic": True,
                    "latency_ms": rnd.randint(5, 9000),
                    "ttft_ms": None,
                    "prompt_tokens": rnd.randint(10, 4000),
                    "completion_tokens": rnd.randint(0, 1500),
                    "cost_usd": 0,
                    "attempts": [],
                    "fallback": False,
                }
            )
        groups.append(len(summarise(rows)))
        began = time.perf_counter()
        write_batch(rows)
        times.append((time.perf_counter() - began) * 1000)
    warm = times[1:]
    print(
        f"endpoints={args.endpoints} rows/batch={args.rows} groups/batch~{statistics.median(groups):.0f}: "
        f"median {statistics.median(warm):.0f} ms, range {min(warm):.0f}-{max(warm):.0f} ms "
        f"over {len(warm)} warm batches"
    )


if __name__ == "__main__":
    main()
