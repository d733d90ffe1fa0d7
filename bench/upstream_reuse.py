"""Does RainyModel reuse its upstream connections? Counts the TCP connections the fake upstream accepts while one
RainyModel worker (set up as `make bench` does) answers chat completions, non-stream and stream, at 1 client
(sequential) and at `--clients` clients. Loopback only.

    .venv/bin/python bench/upstream_reuse.py [--requests 100] [--clients 32] [--duration 2]

With keep-alive working, sequential requests open one connection in all, and concurrent ones about one per client.
A connection per request means every call pays a TCP (and, against a real provider, TLS) handshake. Found with
`make profile` (`connect_tcp` under stream load; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per mode")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of concurrent load per mode")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-reuse-"))
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    secret = secrets.token_urlsafe(40)
    lines = [
        "| mode | clients | requests | failed | upstream connections opened | per request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    # In this process (not a subprocess as in bench/run.py), so its count of accepted connections can be read.
    with FakeUpstream(record=False) as fake:
        key = run.setup_database(database_url, secret, fake.port)
        server = run.bench_server(database_url, secret).start()
        try:
            target = run.Target("rainymodel", server.port, "/v1/chat/completions", run.ALIAS, key)
            for stream in (False, True):
                mode = "stream" if stream else "non-stream"
                for clients in (1, args.clients):
                    before = fake.connections_opened
                    if clients == 1:
                        result = target.load(stream, count=args.requests)
                    else:
                        result = target.load(stream, clients=clients, duration=args.duration)
                    opened = fake.connections_opened - before
                    lines.append(
                        f"| {mode} | {clients} | {result.sent} | {result.errors} | {opened} | "
                        f"{opened / max(result.sent, 1):.2f} |"
                    )
        finally:
            server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
