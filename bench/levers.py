"""A/B measurement of one lever (issue 16): two RainyModel servers that differ only in the lever, measured
interleaved (A, B, A, B ...) in one run against the same fake upstream, so the noise of a shared machine falls on
both alike.

Primary figure: the worker's CPU time per request at --clients concurrent clients (utime + stime of the server
process from /proc/<pid>/stat, divided by the requests it answered in that window). It counts every thread of the
worker (the log writer included) and hardly depends on what else the machine runs. Also reported: req/s at
--clients clients, and p50/p99 at 1 client.

    .venv/bin/python bench/levers.py --lever transport --rounds 3
    .venv/bin/python bench/levers.py --a-env X=1 --b-env X=2 --b-args --loop --b-args asyncio   # ad hoc

Each server gets its own copy of one migrated SQLite database; at the end both are stopped (SIGTERM flushes the
log) and their request logs are counted against the requests sent. Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Connection, percentile  # noqa: E402
from bench.run import ALIAS, Target, setup_database, start_fake_upstream  # noqa: E402
from tests.fakes.server import RainyModelServer, free_port  # noqa: E402

# Named levers: (A: today, B: the change) as (extra env, extra uvicorn args).
LEVERS: dict[str, tuple[tuple[dict, tuple], tuple[dict, tuple]]] = {
    "transport": (
        ({"RAINYMODEL_UPSTREAM_TRANSPORT": "httpcore"}, ()),
        ({"RAINYMODEL_UPSTREAM_TRANSPORT": "aiohttp"}, ()),
    ),
    "loop": (({}, ("--loop", "uvloop")), ({}, ("--loop", "asyncio"))),
    "http": (({}, ("--http", "httptools")), ({}, ("--http", "h11"))),
    "access-log": (({}, ("--access-log",)), ({}, ("--no-access-log",))),
    "limited-protocol": (
        ({}, ("--http", "httptools")),
        ({}, ("--http", "rainymodel_site.http_protocol:LimitedHttpToolsProtocol")),
    ),
}


def log(message: str) -> None:
    print(f"[levers] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _chunks_of_one_stream(port: int, request: bytes) -> int:
    """How many HTTP chunks (server writes) one streamed answer came in: the relay's writes per answer."""
    connection = Connection(port)
    await connection.ensure_open()
    assert connection.writer is not None and connection.reader is not None
    try:
        connection.writer.write(request)
        await connection.reader.readuntil(b"\r\n\r\n")
        buf = bytearray()
        chunks = 0
        while True:
            data = await connection.reader.read(1 << 16)
            if not data:
                return chunks
            buf += data
            while True:  # count complete chunks; the terminating 0-size chunk ends the answer
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                if len(buf) < line_end + 2 + size + 2:
                    break
                if size == 0:
                    return chunks
                chunks += 1
                del buf[: line_end + 2 + size + 2]
    finally:
        connection.close()


def chunks_per_stream(target: Target, samples: int = 20) -> float:
    counts = [asyncio.run(_chunks_of_one_stream(target.port, target.request(True))) for _ in range(samples)]
    target.sent += samples
    return statistics.median(counts)


def parse_env(items: list[str]) -> dict:
    return dict(item.split("=", 1) for item in items)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lever", choices=sorted(LEVERS), help="a named lever (else --a-env/--b-env/...)")
    parser.add_argument("--a-env", action="append", default=[], help="NAME=value for server A")
    parser.add_argument("--b-env", action="append", default=[], help="NAME=value for server B")
    parser.add_argument("--a-args", action="append", default=[], help="extra uvicorn argument for A (repeat)")
    parser.add_argument("--b-args", action="append", default=[], help="extra uvicorn argument for B (repeat)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs per mode")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of concurrent load per window")
    parser.add_argument("--requests", type=int, default=300, help="requests at 1 client per window")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--modes", default="non-stream,stream")
    args = parser.parse_args(argv)

    if args.lever:
        (a_env, a_args), (b_env, b_args) = LEVERS[args.lever]
    else:
        a_env, a_args = parse_env(args.a_env), tuple(args.a_args)
        b_env, b_args = parse_env(args.b_env), tuple(args.b_args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        import uvloop

        uvloop.install()  # the load generator's own loop: lighter, so less of the shared CPU
    except ImportError:
        pass

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-levers-"))
    secret = secrets.token_urlsafe(40)
    db_a = workdir / "a.sqlite3"
    fake_port = free_port()
    fake = start_fake_upstream(fake_port, args.tokens)
    servers: dict[str, RainyModelServer] = {}
    try:
        key = setup_database(f"sqlite:///{db_a}", secret, fake_port)
        from django.db import connections

        connections.close_all()
        db_b = workdir / "b.sqlite3"
        shutil.copy(db_a, db_b)
        base = {"DJANGO_SETTINGS_MODULE": "rainymodel_site.settings", "SECRET_KEY": secret}
        common = {"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": "", "LOG_LEVEL": "WARNING"}
        for name, db, env, extra in (("A", db_a, a_env, a_args), ("B", db_b, b_env, b_args)):
            servers[name] = RainyModelServer(
                base_env={**base, "DATABASE_URL": f"sqlite:///{db}"}, env={**common, **env}, extra_args=extra
            ).start()
            log(f"{name}: pid {servers[name].pid} env {env} args {' '.join(extra)}")
        targets = {
            name: Target(name, server.port, "/v1/chat/completions", ALIAS, key) for name, server in servers.items()
        }
        rows: dict = {(n, m): {"cpu_ms": [], "rps": [], "p50": [], "p99": []} for n in servers for m in modes}
        for target in targets.values():  # warm both: imports, pools, caches
            for mode in modes:
                target.load(mode == "stream", count=200)
        for round_no in range(args.rounds):
            for mode in modes:
                order = ("A", "B") if round_no % 2 == 0 else ("B", "A")
                for name in order:
                    target, pid = targets[name], servers[name].pid
                    assert pid is not None
                    stream = mode == "stream"
                    before = cpu_seconds(pid)
                    many = target.load(stream, clients=args.clients, duration=args.duration)
                    spent = cpu_seconds(pid) - before
                    single = target.load(stream, count=args.requests)
                    row = rows[(name, mode)]
                    row["cpu_ms"].append(spent * 1000 / max(1, many.sent))
                    row["rps"].append(many.throughput())
                    row["p50"].append(percentile(single.latencies, 50) * 1000)
                    row["p99"].append(percentile(single.latencies, 99) * 1000)
                    errors = many.errors + single.errors
                    log(
                        f"round {round_no + 1} {mode} {name}: {row['cpu_ms'][-1]:.3f} ms CPU/req, "
                        f"{row['rps'][-1]:.0f} req/s, 1 client p50 {row['p50'][-1]:.2f} p99 {row['p99'][-1]:.2f} ms"
                        + (f", {errors} errors {many.error_samples[:1] + single.error_samples[:1]}" if errors else "")
                    )
        writes = {}
        if "stream" in modes:
            try:
                writes = {name: chunks_per_stream(target) for name, target in targets.items()}
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                log(f"could not count the writes of a stream: {exc!r}")
        rss = {name: server.rss_bytes() / 2**20 for name, server in servers.items()}
        lost = {}
        for name, server in servers.items():
            server.stop()
            db = db_a if name == "A" else db_b
            with sqlite3.connect(db) as conn:
                logged = conn.execute("SELECT COUNT(*) FROM usage_requestlog").fetchone()[0]
            lost[name] = (targets[name].sent, logged)
        print(report(args, a_env, a_args, b_env, b_args, rows, modes, lost, writes, rss))
    finally:
        for server in servers.values():
            if server.running():
                server.kill()
        fake.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(args, a_env, a_args, b_env, b_args, rows, modes, lost, writes, rss) -> str:
    def describe(env, extra):
        return " ".join([f"{k}={v}" for k, v in env.items()] + list(extra)) or "(defaults)"

    lines = [
        f"A = {describe(a_env, a_args)}; B = {describe(b_env, b_args)}; {args.rounds} interleaved rounds, "
        f"{args.clients} clients x {args.duration:g} s, {args.requests} requests at 1 client; medians of the rounds.",
        "",
        "| mode | server | CPU ms/request at load | req/s at load | p50 1 client (ms) | p99 1 client (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for name in ("A", "B"):
            row = rows[(name, mode)]
            lines.append(
                f"| {mode} | {name} | {statistics.median(row['cpu_ms']):.3f} | {statistics.median(row['rps']):.0f} | "
                f"{statistics.median(row['p50']):.2f} | {statistics.median(row['p99']):.2f} |"
            )
    lines.append("")
    for name, count in writes.items():
        lines.append(
            f"- {name}: a {args.tokens}-token streamed answer reached the client in {count:g} writes (median)."
        )
    for name, mb in rss.items():
        lines.append(f"- {name}: worker resident memory {mb:.1f} MB after the run.")
    for name, (sent, logged) in lost.items():
        lines.append(
            f"- {name}: {logged} log rows for {sent} requests sent ({'ok' if sent == logged else 'MISMATCH'})."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
