"""The request-log writer's CPU per row, ways of writing side by side (issue 16; not a test, run by hand).

    .venv/bin/python bench/writer_cost.py [--batches 12] [--rows 600] [--sizes 100,600,2000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rm_scratch .venv/bin/python bench/writer_cost.py

The writer thread shares the worker's GIL with the event loop, so what matters is its CPU time, not its wall time:
each batch is timed with `time.thread_time()` around `usage.writer.write_batch` (rows insert, rollups,
`last_used_at`, in one transaction, exactly as the thread does), and the variants run interleaved (A, B, C, A, B,
C, ...) in one process so machine noise falls on all of them alike. Rows look like the load benchmark's (one key,
one alias, one route; each a fresh request id). Without DATABASE_URL it migrates a scratch SQLite database in a
temporary directory; with it, it migrates and writes into the database given (use a scratch one: rows are
added).

Variants: `fields` (before issue 16: every value through `field.get_db_prep_save`, a copy of the old code below),
`plain` (values of plain types pass as they are: usage/writer.py), and on PostgreSQL `copy` (plain + COPY).
Then, for the current code, the CPU per row by batch size (`--sizes`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=12, help="batches per variant (the first is dropped)")
    parser.add_argument("--rows", type=int, default=600, help="rows per batch (600: 1 s of the bench at 600 req/s)")
    parser.add_argument("--sizes", default="100,600,2000", help="batch sizes for the size sweep ('' skips it)")
    args = parser.parse_args()
    scratch = None
    if not os.environ.get("DATABASE_URL"):
        scratch = tempfile.TemporaryDirectory()
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch.name}/writer.sqlite3"
    os.environ.setdefault("SECRET_KEY", "bench-writer-cost")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from usage import writer

    call_command("migrate", verbosity=0)  # a scratch database, or one the caller gave: brought up to date

    def rows(n: int) -> list[dict]:
        now = timezone.now()
        return [
            {
                "id": "req_" + secrets.token_hex(12),
                "_client_request_id": False,
                "created_at": now,
                "endpoint": "chat",
                "api_key_id": 1,
                "key_prefix": "rm-abcdefgh",
                "requested_model": "rainymodel/auto",
                "alias": "rainymodel/auto",
                "policy": "auto",
                "tier": "free",
                "provider": "fake",
                "upstream_model": "fake-model",
                "status": 200,
                "error_code": "",
                "admitted": True,
                "stream": i % 2 == 0,
                "latency_ms": 2,
                "ttft_ms": 1 if i % 2 == 0 else None,
                "prompt_tokens": 10,
                "completion_tokens": 20,
                "usage_estimated": False,
                "cost_usd": round(30 * 0.15 / 1e6, 8),
                "attempts": [{"route": "free/fake/fake-model", "status": 200, "outcome": "ok", "ms": 1}],
                "fallback": False,
                "client_ip": "127.0.0.1",
                "user_agent": "bench/loadgen",
            }
            for i in range(n)
        ]

    new_insert = writer._insert

    def plain(model, batch):
        writer.COPY_ON_POSTGRESQL = False
        new_insert(model, batch)

    def copy(model, batch):
        writer.COPY_ON_POSTGRESQL = True
        new_insert(model, batch)

    variants = {"fields": fields_insert, "plain": plain}
    if connection.vendor == "postgresql":
        variants["copy"] = copy

    def cpu_per_row(insert, batch) -> float:
        writer._insert = insert
        began = time.thread_time()
        writer.write_batch(batch)
        return (time.thread_time() - began) / len(batch) * 1e6

    for _ in range(2):  # warm caches, the connection and the tables
        for insert in variants.values():
            cpu_per_row(insert, rows(args.rows))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.batches):
        for name, insert in variants.items():
            samples[name].append(cpu_per_row(insert, rows(args.rows)))
    print(f"{connection.vendor}: writer CPU per row (µs), {args.rows}-row batches, {args.batches} each, interleaved")
    print("| variant | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")

    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        current = copy if connection.vendor == "postgresql" else plain
        by_size: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(max(3, args.batches // 2)):
            for size in sizes:
                by_size[size].append(cpu_per_row(current, rows(size)))
        print("\n| rows per batch | CPU per row (µs), median | min |")
        print("|---:|---:|---:|")
        for size, values in by_size.items():
            print(f"| {size} | {statistics.median(values):.1f} | {min(values):.1f} |")
    writer._insert = new_insert


def fields_insert(model, rows: list[dict]) -> None:
    """usage/writer.py's `_insert` before issue 16 (commit 8b4f0d6): every value through its field."""
    from django.db import connection

    fields = model._meta.concrete_fields
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    params = [
        [f.get_db_prep_save(row[f.attname] if f.attname in row else f.get_default(), connection) for f in fields]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


if __name__ == "__main__":
    main()
