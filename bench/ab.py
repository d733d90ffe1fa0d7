"""Two versions of RainyModel side by side under the same load, interleaved: the worker's CPU per request (issue 16).

    .venv/bin/python bench/ab.py [--base main] [--rounds 6] [--duration 4] [--clients 32] [--modes non-stream,stream]

On a shared, noisy machine req/s and latency swing by ±30 % between runs; the worker process's CPU time per
request (utime + stime of every thread, /proc/<pid>/stat, over the requests it served) hardly does. This script
runs A (the commit `--base`, extracted with `git archive` into a temporary directory) and B (this working tree) as
two uvicorn workers started the same way as `make bench`'s (one worker, uvloop + httptools when installed,
`RAINYMODEL_LOG_FLUSH_S=1`, no Redis, each on its own copy of one SQLite database, both against one fake upstream
on loopback), and sends `--clients` concurrent clients to A, then B, then A, ... for `--rounds` rounds per mode.
Each window's CPU is read after the load stops and the writer's next flush has run (so the log rows the window
caused are paid for in it). Prints, per mode, the median and spread of CPU ms per request, req/s and the
concurrent p50/p99 latency seen by the clients, and checks that each server logged one row per request.
With DATABASE_URL/REDIS_URL exported, both servers use them instead (the production shape): give a scratch
database, and note that A and B then share it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import percentile, run_load  # noqa: E402
from bench.run import ALIAS, Target, setup_database, start_fake_upstream  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def extract(commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for link in (".venv", ".secret_key"):
        if (ROOT / link).exists() and not (into / link).exists():
            (into / link).symlink_to((ROOT / link).resolve())
    return into


def start_server(tree: Path, env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", "rainymodel_site.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--lifespan", "on", "--no-access-log", "--timeout-graceful-shutdown", "5"]
    process = subprocess.Popen(
        command, cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server in {tree} exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server in {tree} did not start:\n{log_path.read_text()[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="commit (or branch) for A; B is this working tree")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load per window")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--modes", default="non-stream,stream")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--env-b", action="append", default=[], help="NAME=VALUE for B only (repeatable)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-ab-"))
    secret = secrets.token_urlsafe(40)
    shared_db = os.environ.get("DATABASE_URL")
    fake_port = free_port()
    fake = start_fake_upstream(fake_port, args.tokens)
    servers: dict[str, subprocess.Popen] = {}
    try:
        key = setup_database(shared_db or f"sqlite:///{workdir / 'a.sqlite3'}", secret, fake_port)
        trees = {"A": extract(args.base, workdir / "a"), "B": ROOT}
        ports = {"A": free_port(), "B": free_port()}
        databases = {}
        for name in trees:
            if shared_db:
                databases[name] = shared_db
            else:
                if name != "A":  # a copy through SQLite's backup API, which includes what is still in the WAL
                    with sqlite3.connect(workdir / "a.sqlite3") as src, sqlite3.connect(workdir / "b.sqlite3") as dst:
                        src.backup(dst)
                databases[name] = f"sqlite:///{workdir / (name.lower() + '.sqlite3')}"
        for name, tree in trees.items():
            env = dict(os.environ)
            env.update(
                {
                    "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
                    "SECRET_KEY": secret,
                    "DATABASE_URL": databases[name],
                    "RAINYMODEL_LOG_FLUSH_S": "1.0",
                    "LOG_LEVEL": "WARNING",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            env.setdefault("REDIS_URL", "")
            if name == "B":
                env.update(item.split("=", 1) for item in args.env_b)
            servers[name] = start_server(tree, env, ports[name], workdir / f"{name}.log")
        print(f"A = {args.base} ({trees['A']}), B = {ROOT}; db {'shared: ' + shared_db if shared_db else 'SQLite'}")
        sent = dict.fromkeys(trees, 0)
        for mode in args.modes.split(","):
            stream = mode == "stream"
            targets = {n: Target(n, ports[n], "/v1/chat/completions", ALIAS, key) for n in trees}
            for target in targets.values():  # warm up
                asyncio.run(run_load(target.port, target.request(stream), stream=stream, clients=4, count=300))
                sent[target.name] += 300
            windows: dict[str, list[dict]] = {n: [] for n in trees}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    pid = servers[name].pid
                    time.sleep(1.2)  # the previous window's rows are flushed before this one starts
                    before, loop_before = cpu_seconds(pid), cpu_seconds(pid, pid)
                    result = asyncio.run(
                        run_load(
                            target.port,
                            target.request(stream),
                            stream=stream,
                            clients=args.clients,
                            duration=args.duration,
                        )
                    )
                    time.sleep(1.2)  # the writer's next flush, caused by this window, is counted in it
                    cpu = cpu_seconds(pid) - before
                    loop_cpu = cpu_seconds(pid, pid) - loop_before  # the main thread: the event loop
                    sent[name] += result.sent
                    windows[name].append(
                        {
                            "cpu_ms": cpu / max(1, result.ok) * 1000,
                            "loop_ms": loop_cpu / max(1, result.ok) * 1000,
                            "rps": result.throughput(),
                            "p50": percentile(result.latencies, 50) * 1000,
                            "p99": percentile(result.latencies, 99) * 1000,
                            "errors": result.errors,
                        }
                    )
            print(f"\n{mode}, {args.clients} clients, {args.rounds} windows of {args.duration:g} s each, interleaved")
            print(
                "| version | CPU ms/request (median) | min–max | of which event-loop thread | other threads "
                "(log writer, ...) | req/s (median) | p50 ms | p99 ms | errors |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, rows in windows.items():
                cpu = [r["cpu_ms"] for r in rows]
                loop = statistics.median(r["loop_ms"] for r in rows)
                rest = statistics.median(r["cpu_ms"] - r["loop_ms"] for r in rows)
                print(
                    f"| {name} | {statistics.median(cpu):.3f} | {min(cpu):.3f}–{max(cpu):.3f} "
                    f"| {loop:.3f} | {rest:.3f} "
                    f"| {statistics.median(r['rps'] for r in rows):.0f} "
                    f"| {statistics.median(r['p50'] for r in rows):.1f} "
                    f"| {statistics.median(r['p99'] for r in rows):.1f} | {sum(r['errors'] for r in rows)} |"
                )
        for process in servers.values():
            process.terminate()
            process.wait(30)
        if not shared_db:
            for name in trees:
                path = workdir / f"{name.lower()}.sqlite3"
                with sqlite3.connect(path) as db:
                    rows = db.execute("SELECT COUNT(*) FROM usage_requestlog").fetchone()[0]
                print(f"{name}: {rows} log rows for {sent[name]} requests sent (+2 health checks are not logged)")
    finally:
        for process in servers.values():
            if process.poll() is None:
                process.kill()
        fake.terminate()
        fake.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
