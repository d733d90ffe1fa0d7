"""`make bench WORKERS=N` (`bench/run.py --workers N`): does RainyModel scale with workers? Loopback only.

The production command, gunicorn with gunicorn.conf.py (RainyModelWorker), bound to 127.0.0.1, is started with 1
worker and with N workers in turn, `--rounds` times (1, N, 1, N, ...: interleaved, so a change in the machine's
other load hits both alike). Each time: chat completions non-stream, then stream, at `--clients` clients for
`--duration` seconds, with the CPU time each process spent in that window read from /proc: the workers', the load
generator's (this process), the fake upstream's, and the whole machine's. Then, on N workers:

- limits exact: a key with `--limit` rpm, and one with a request quota of `--limit` a day, each sent 4x that many
  requests at `--clients` clients; exactly `--limit` must be admitted (200) and the rest refused (429);
- no lost log row: after the last server stopped (SIGTERM: each worker flushes its buffer), the request log holds
  one row per request sent, 200s and 429s alike.

SQLite by default; `--postgres URL` for PostgreSQL. N > 1 needs `--redis-url` (each worker would otherwise count
limits alone), and then the 1-worker runs use Redis too, so the two differ only in the number of workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from bench import run
from bench.loadgen import Connection
from bench.procstat import CpuMeter, children, rss_mb
from tests.fakes.server import ProductionServer, ServerFailed

GRACEFUL_STOP_S = 60.0  # gunicorn.conf.py gives in-flight calls 50 s, then each worker flushes its log rows


class GunicornServer(ProductionServer):
    """The production command (tests/fakes/server.py: gunicorn reads gunicorn.conf.py from the project directory; only
    the loopback bind address and the number of workers are on the command line), waited for worker by worker."""

    def wait_for_workers(self, timeout: float = 30.0) -> list[int]:
        """The worker pids, once all have forked and each answers /health (gunicorn accepts before all are up)."""
        master = self.pid
        assert master is not None, "start() first"
        deadline = time.monotonic() + timeout
        while len(children(master)) < self.workers:
            if time.monotonic() > deadline:
                raise ServerFailed(f"gunicorn started {children(master)} of {self.workers} workers")
            time.sleep(0.1)
        return children(master)


def statuses(port: int, request: bytes, clients: int, count: int) -> Counter[int]:
    """Send `count` requests over `clients` connections; how many got each status."""
    counts: Counter[int] = Counter()
    sent = 0

    async def client():
        nonlocal sent
        connection = Connection(port)
        try:
            while sent < count:
                sent += 1
                try:
                    status, _, _ = await connection.exchange(request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    connection.close()
                    status = 0
                counts[status] += 1
        finally:
            connection.close()

    async def main():
        await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(main())
    return counts


def measure_workers(server: GunicornServer, target: run.Target, fake_pid: int, args, round_no: int) -> list[dict]:
    pids = server.wait_for_workers()
    rows = []
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        target.load(stream, clients=args.clients, duration=1.0)  # every worker warm (snapshot, pool, JIT caches)
        meter = CpuMeter({"workers": pids, "master": [server.pid or 0], "fake": [fake_pid]}).start()
        started = time.perf_counter()
        result = target.load(stream, clients=args.clients, duration=args.duration)
        wall = time.perf_counter() - started
        spent = meter.stop()
        ok = result.ok or 1
        bench_cpu = spent["workers"] + spent["master"] + spent["fake"] + spent["loadgen"]
        rows.append(
            {
                "workers": server.workers,
                "round": round_no,
                "mode": mode,
                "rps": result.throughput(),
                "failed": result.errors,
                "worker_cpu_ms": 1000 * spent["workers"] / ok,
                "loadgen_cpu_ms": 1000 * spent["loadgen"] / ok,
                "fake_cpu_ms": 1000 * spent["fake"] / ok,
                "workers_cores": spent["workers"] / wall,
                "loadgen_cores": spent["loadgen"] / wall,
                "bench_cores": bench_cpu / wall,
                "machine_cores": spent["machine_busy"] / wall,
                "rss_mb": [round(rss_mb(p), 1) for p in pids],
            }
        )
        log_row(rows[-1])
    return rows


def log_row(row: dict) -> None:
    run.log(
        f"{row['workers']} worker(s), round {row['round']}, {row['mode']}: {row['rps']:.0f} req/s, worker CPU "
        f"{row['worker_cpu_ms']:.2f} ms/req, loadgen {row['loadgen_cores']:.2f} cores, machine busy "
        f"{row['machine_cores']:.2f} cores"
    )


def limits_phase(server: GunicornServer, keys: dict[str, str], args) -> dict[str, Counter[int]]:
    server.wait_for_workers()
    found = {}
    for name, key in keys.items():
        request = run.build_request(server.port, "/v1/chat/completions", run.body_for(False, run.ALIAS), key)
        found[name] = statuses(server.port, request, args.clients, 4 * args.limit)
        run.log(f"limits, {name}: {dict(found[name])}")
    return found


def estimate(rows: list[dict], workers: int, cores: int) -> float:
    """req/s the same CPU cost per request would give on `cores` idle cores: each worker can use at most one core
    (its event loop holds the GIL for nearly all of its work) and all bench processes share the cores."""
    worker = statistics.median(r["worker_cpu_ms"] for r in rows) / 1000
    others = statistics.median(r["loadgen_cpu_ms"] + r["fake_cpu_ms"] for r in rows) / 1000
    return min(workers / worker, cores / (worker + others))


def report(rows: list[dict], limits: dict[str, Counter[int]], log_rows: int, sent: int, args, db: str) -> str:
    n = args.workers
    cores = os.cpu_count() or 1
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: gunicorn (gunicorn.conf.py, RainyModelWorker) "
        f"with 1 and {n} workers, {args.rounds} rounds interleaved; {db}; {args.clients} clients for "
        f"{args.duration:g} s per measurement; {os.cpu_count()} CPUs; load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| workers | round | mode | req/s | worker CPU ms/req | load generator CPU ms/req | fake CPU ms/req | "
        "cores busy: workers / load generator / all bench processes / whole machine | failed | RSS per worker (MB) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['round']} | {r['mode']} | {r['rps']:.0f} | {r['worker_cpu_ms']:.2f} | "
            f"{r['loadgen_cpu_ms']:.2f} | {r['fake_cpu_ms']:.2f} | {r['workers_cores']:.2f} / "
            f"{r['loadgen_cores']:.2f} / {r['bench_cores']:.2f} / {r['machine_cores']:.2f} | {r['failed']} | "
            f"{', '.join(f'{m:.0f}' for m in r['rss_mb'])} |"
        )
    lines += [
        "",
        f"| mode | 1 worker req/s (median) | {n} workers req/s (median) | ratio | worker CPU ms/req, 1 / {n} | "
        f"CPU-bound estimate for {cores} idle cores, 1 / {n} workers (req/s) | estimated ratio |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for mode in ("non-stream", "stream"):
        one = [r for r in rows if r["mode"] == mode and r["workers"] == 1]
        many = [r for r in rows if r["mode"] == mode and r["workers"] == n]
        if not one or not many:
            continue
        a, b = statistics.median(r["rps"] for r in one), statistics.median(r["rps"] for r in many)
        ca = statistics.median(r["worker_cpu_ms"] for r in one)
        cb = statistics.median(r["worker_cpu_ms"] for r in many)
        ea, eb = estimate(one, 1, cores), estimate(many, n, cores)
        lines.append(
            f"| {mode} | {a:.0f} | {b:.0f} | **{b / a:.2f}x** | {ca:.2f} / {cb:.2f} | {ea:.0f} / {eb:.0f} | "
            f"{eb / ea:.2f}x |"
        )
    lines.append("")
    for name, counts in limits.items():
        admitted, refused = counts.get(200, 0), counts.get(429, 0)
        other = sum(counts.values()) - admitted - refused
        verdict = (
            "exact" if admitted == args.limit and admitted + counts.get(429, 0) == sum(counts.values()) else "NOT EXACT"
        )
        lines.append(
            f"- Limits on {n} workers, {name} of {args.limit}: {sum(counts.values())} requests sent, {admitted} "
            f"admitted, {refused} refused with 429, other {other}: "
            f"**{verdict}**."
        )
    lines.append(
        f"- Request log: {log_rows} rows for {sent} requests sent "
        f"({'none lost' if log_rows == sent else 'MISMATCH'}), over every server of the run."
    )
    return "\n".join(lines) + "\n"


def run_scaling(args, workdir: Path) -> int:
    secret = secrets.token_urlsafe(40)
    fake_port = run.free_port()
    fake = run.start_fake_upstream(fake_port, args.tokens)
    server = None
    db = "PostgreSQL + Redis" if args.postgres else ("SQLite + Redis" if args.redis_url else "SQLite")
    try:
        database_url = run.bench_database(args, workdir)
        key = run.setup_database(database_url, secret, fake_port)
        from apikeys.services import apikey_create

        keys = {
            "rpm limit": apikey_create(name="bench-rpm", rpm_limit=args.limit)[1],
            "request quota per day": apikey_create(name="bench-quota", quotas=[("day", "max_requests", args.limit)])[1],
        }
        target = run.Target("rainymodel", 0, "/v1/chat/completions", run.ALIAS, key)
        rows: list[dict] = []
        counts = sorted({1, args.workers})
        sent_elsewhere = 0
        for round_no in range(1, args.rounds + 1):
            for workers in counts:
                server = run.bench_server(
                    database_url, secret, args.redis_url, server_class=GunicornServer, workers=workers
                )
                server.start()
                target.port = server.port
                problem = run.check_answers(target)
                if problem:
                    run.log(problem + "\n" + server.log_text()[-2000:])
                    return 2
                rows += measure_workers(server, target, fake.pid, args, round_no)
                server.stop(GRACEFUL_STOP_S)
                server = None
        server = run.bench_server(
            database_url, secret, args.redis_url, server_class=GunicornServer, workers=args.workers
        )
        server.start()
        limits = limits_phase(server, keys, args)
        sent_elsewhere += sum(sum(c.values()) for c in limits.values())
        server.stop(GRACEFUL_STOP_S)
        server = None
        log_rows = run.count_log_rows()
        sent = target.sent + sent_elsewhere
    finally:
        if server is not None:
            server.stop(GRACEFUL_STOP_S)
        fake.terminate()
        fake.wait(5)
    table = report(rows, limits, log_rows, sent, args, db)
    print(table)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (run.RESULTS / f"scaling-{stamp}.md").write_text(table)
    (run.RESULTS / f"scaling-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "limits": {k: dict(v) for k, v in limits.items()}}, indent=2)
    )
    shutil.rmtree(workdir, ignore_errors=True)
    if args.postgres:
        run.recreate_postgres(args.postgres, create=False)
    exact = all(c.get(200, 0) == args.limit for c in limits.values())
    return 0 if log_rows == sent and exact else 1
