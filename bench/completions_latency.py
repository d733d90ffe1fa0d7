"""The latency RainyModel adds to POST /v1/completions (FIM) beside chat's, at one client, loopback only.

Same setup as `bench/run.py` (whose helpers it uses): the fake upstream as its own process, a fresh SQLite
database with one route and a key with an rpm limit far above the load, ONE uvicorn worker. For chat and for
completions (with `suffix`), non-streaming and streaming, it sends --requests requests one after another (after
--warmup) to the fake directly and through RainyModel and prints p50/p99 of each and the difference: the latency
RainyModel adds. Then it checks the request log holds one row per proxied request.

    python bench/completions_latency.py --requests 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncio  # noqa: E402

from bench.loadgen import build_request, percentile, run_load  # noqa: E402
from bench.run import ALIAS, MESSAGES, count_log_rows, log, setup_database, start_fake_upstream  # noqa: E402
from tests.fakes.server import RainyModelServer, free_port  # noqa: E402

ENDPOINTS = {
    "chat": ("/v1/chat/completions", lambda model: {"model": model, "messages": MESSAGES}),
    "completions": (
        "/v1/completions",
        lambda model: {
            "model": model,
            "prompt": "def add(a, b):\n    ",
            "suffix": "\n    return c\n",
            "max_tokens": 32,
        },
    ),
}


def p50_p99(port: int, path: str, body: dict, key: str | None, stream: bool, args) -> tuple[float, float, int]:
    if stream:
        body = dict(body, stream=True)
    request = build_request(port, path, body, key)
    asyncio.run(run_load(port, request, stream=stream, count=args.warmup))
    result = asyncio.run(run_load(port, request, stream=stream, count=args.requests))
    if result.errors:
        log(f"{path} stream={stream}: {result.errors} errors, e.g. {result.error_samples[:2]}")
    return percentile(result.latencies, 50) * 1000, percentile(result.latencies, 99) * 1000, result.sent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-bench-cmpl-"))
    secret = secrets.token_urlsafe(40)
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    fake_port = free_port()
    fake = start_fake_upstream(fake_port, args.tokens)
    server = None
    rows = []
    proxied = 0
    try:
        key = setup_database(database_url, secret, fake_port)
        server = RainyModelServer(
            base_env={
                "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
                "SECRET_KEY": secret,
                "DATABASE_URL": database_url,
            },
            env={"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": "", "LOG_LEVEL": "WARNING"},
        ).start()
        for name, (path, body_for) in ENDPOINTS.items():
            for stream in (False, True):
                d50, d99, _ = p50_p99(fake_port, path, body_for("fake-model"), None, stream, args)
                r50, r99, sent = p50_p99(server.port, path, body_for(ALIAS), key, stream, args)
                proxied += sent + args.warmup
                rows.append((name, "stream" if stream else "non-stream", d50, d99, r50, r99))
        server.stop()
        logged = count_log_rows()
    finally:
        if server is not None:
            server.stop()
        fake.terminate()
        fake.wait(5)
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.requests} requests at 1 client after {args.warmup} warmup, {args.tokens}-word answers\n"
    )
    print("| endpoint | mode | direct p50 ms | direct p99 ms | via RainyModel p50 ms | p99 ms | added p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, mode, d50, d99, r50, r99 in rows:
        print(f"| {name} | {mode} | {d50:.2f} | {d99:.2f} | {r50:.2f} | {r99:.2f} | {r50 - d50:.2f} |")
    print(f"\nrequest log rows: {logged} for {proxied} proxied requests")
    return 0 if logged == proxied else 1


if __name__ == "__main__":
    sys.exit(main())
