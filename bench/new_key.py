"""How long a brand-new API key is refused (issue 9), measured on a real server. Loopback only.

Migrates the database given by --database-url (use a scratch one: it gets a route and keys), starts a fake upstream
and ONE RainyModel worker on it (with --redis-url, the config version lives in Redis as in production), then for
each of --keys keys: creates it through `apikeys.services.apikey_create` in this process, and calls
`/v1/chat/completions` with it at once and again every 10 ms until it answers 200. Prints, per run, how long the
first 200 took after the create returned and how many 401s came before it. Then sends --unknown requests with
well-formed keys nobody created, one after another, and prints how long their 401 took (each may now wait for a
shared version check).

    .venv/bin/python bench/new_key.py --database-url postgres://postgres@127.0.0.1:5432/rm_scratch \
        --redis-url redis://127.0.0.1:6379/5
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHAT = {"model": "rainymodel/auto", "messages": [{"role": "user", "content": "hello"}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--unknown", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between keys (spreads them over polls)")
    args = parser.parse_args()

    secret = secrets.token_urlsafe(40)
    env = {
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "SECRET_KEY": secret,
        "DATABASE_URL": args.database_url,
    }
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    import django

    django.setup()
    import httpx
    from django.core.management import call_command

    from apikeys.services import apikey_create
    from tests.fakes.routing_config import make_routing, upstream
    from tests.fakes.server import RainyModelServer
    from tests.fakes.upstream import FakeUpstream

    call_command("migrate", verbosity=0, interactive=False)
    with FakeUpstream() as fake:
        make_routing(upstream(fake, tier="free", name="fake", max_retries=0))
        with RainyModelServer(
            base_env=env,
            env={
                "RAINYMODEL_SNAPSHOT_POLL_S": os.environ.get("RAINYMODEL_SNAPSHOT_POLL_S", "0.5"),
                "RAINYMODEL_AUTH_FAILURES_PER_MIN": "100000",
            },
        ) as server:
            waits, refusals = [], []
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for n in range(args.keys):
                    time.sleep(args.pause)
                    _, full_key = apikey_create(name=f"new-key-bench-{n}-{secrets.token_hex(3)}")
                    created = time.perf_counter()
                    refused = 0
                    while True:
                        r = client.post(
                            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {full_key}"}
                        )
                        if r.status_code == 200:
                            break
                        assert r.status_code == 401, r.text
                        refused += 1
                        time.sleep(0.01)
                    waits.append(time.perf_counter() - created)
                    refusals.append(refused)
                unknown = []
                for _ in range(args.unknown):
                    started = time.perf_counter()
                    r = client.post(
                        "/v1/chat/completions",
                        json=CHAT,
                        headers={"Authorization": f"Bearer rm-{secrets.token_hex(20)}"},
                    )
                    unknown.append(time.perf_counter() - started)
                    assert r.status_code == 401, r.text
    ms = sorted(w * 1000 for w in waits)
    print(
        f"{args.keys} new keys, poll {os.environ.get('RAINYMODEL_SNAPSHOT_POLL_S', '0.5')} s, "
        f"{'Redis' if args.redis_url else 'no Redis'}, {args.database_url.split(':')[0]}"
    )
    print(
        f"first 200 after create: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms; "
        f"keys refused at least once: {sum(1 for r in refusals if r)}/{args.keys}, 401s in all: {sum(refusals)}"
    )
    if unknown:
        ms = sorted(u * 1000 for u in unknown)
        print(
            f"{args.unknown} unknown keys one after another: 401 in median {statistics.median(ms):.1f} ms, "
            f"p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms"
        )


if __name__ == "__main__":
    main()
