"""Where a RainyModel worker spends its CPU under the benchmark's load (`make profile`; docs/benchmarks.md says how
to read the result). Loopback only.

1. Sets up exactly as `make bench` (bench/run.py): the fake upstream process, a fresh SQLite database with a route
   to the fake and a key whose rpm limit never triggers, ONE uvicorn worker (`--postgres URL --redis-url URL`: on
   PostgreSQL + Redis, the production shape).
2. For non-stream, then stream chat completions: puts `--clients` (32) clients of load on the worker
   (bench/loadgen.py) and records it with py-spy for `--duration` (10) seconds at `--rate` (200) Hz, in py-spy's
   raw (collapsed stacks) format, non-blocking (`--nonblocking`: the worker is never paused to be sampled, so it
   runs at full speed; the price is an occasional torn stack, counted as a py-spy error). The worker's CPU time
   per request over the same window comes from /proc.
3. Summarises the samples by area (upstream client, log-writer thread, asyncio loop, each RainyModel app, Django,
   uvicorn, DRF/adrf, ...) and by top self-time frame, prints markdown tables, and writes under bench/results/:
   `profile-<stamp>-<mode>.txt` (raw stacks: flamegraph.pl, speedscope.app and inferno read them) and
   `profile-<stamp>-<mode>.speedscope.json` (open at https://www.speedscope.app, or `speedscope FILE`).
4. With pyinstrument (`--pyinstrument`, on by default): restarts the worker with bench/pyinstrument_app.py around
   the application and profiles `--single` sequential requests at 1 client, per mode, into
   `profile-<stamp>-<mode>-single.html` and `.txt` (call tree with wall time, awaits included).

py-spy needs ptrace rights on the worker: root with CAP_SYS_PTRACE (the default for root outside a container;
`docker run --cap-add SYS_PTRACE` inside one), or the same user with /proc/sys/kernel/yama/ptrace_scope at 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.procstat import CpuMeter  # noqa: E402
from bench.stacks import parse_raw, speedscope_json, summarise, summary_markdown  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"


def log(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


# --- recording ----------------------------------------------------------------------------------------------------


def record(pid: int, target: run.Target, stream: bool, args, out: Path) -> dict:
    """Load the worker and record it with py-spy over the same window; returns the window's figures."""
    command = [
        str(PY_SPY),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--format",
        "raw",
        "--full-filenames",
        "--nonblocking",
        "--output",
        str(out),
    ]
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The load outlasts the recording by a second, so every sample is taken under full load; CPU time and requests
    # are counted over the whole load (every request sent is answered before `load` returns).
    meter = CpuMeter({"worker": [pid]}).start()
    result = target.load(stream, clients=args.clients, duration=args.duration + 1.0)
    spent = meter.stop()
    output, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not out.exists():
        raise SystemExit(f"py-spy failed (exit {spy.returncode}):\n{output}")
    errors = re.search(r"Errors: (\d+)", output)
    return {
        "requests": result.ok,
        "failed": result.errors,
        "rps": result.throughput(),
        "cpu_ms_per_request": 1000 * spent["worker"] / result.ok if result.ok else float("nan"),
        "loadgen_cpu_ms_per_request": 1000 * spent["loadgen"] / result.ok if result.ok else float("nan"),
        "errors": int(errors.group(1)) if errors else "?",
        "rate": args.rate,
        "duration": args.duration,
        "clients": args.clients,
    }


# --- pyinstrument on single requests -------------------------------------------------------------------------------


class PyinstrumentServer(run.RainyModelServer):
    """The benchmark's server with bench/pyinstrument_app.py around the application."""

    def command(self) -> list[str]:
        return [
            a if a != "rainymodel_site.asgi:application" else "bench.pyinstrument_app:application"
            for a in super().command()
        ]


def profile_single(database_url: str, secret: str, key: str, args, stamp: str) -> list[Path]:
    server = run.bench_server(database_url, secret, args.redis_url, server_class=PyinstrumentServer)
    server.env["RAINYMODEL_BENCH_PYINSTRUMENT_DIR"] = str(run.RESULTS)
    server.start()
    written = []
    try:
        target = run.Target("pyinstrument", server.port, "/v1/chat/completions", run.ALIAS, key)
        import httpx

        for stream in (False, True):
            mode = "stream" if stream else "non-stream"
            target.load(stream, count=min(args.warmup, 50))  # profiled too: enough to warm up
            httpx.get(f"{server.url}/__bench/pyinstrument", timeout=60).raise_for_status()  # forget the warmup
            result = target.load(stream, count=args.single)
            name = f"profile-{stamp}-{mode}-single"
            # Rendering takes a while: the HTML holds every sample of every request.
            answer = httpx.get(f"{server.url}/__bench/pyinstrument?name={name}", timeout=600)
            answer.raise_for_status()
            log(f"pyinstrument {mode}: {result.ok} requests -> {answer.text.strip()}")
            written += [run.RESULTS / f"{name}.html", run.RESULTS / f"{name}.txt"]
    finally:
        server.stop()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds py-spy records, per mode")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--warmup", type=int, default=200, help="requests before each recording")
    parser.add_argument("--tokens", type=int, default=20, help="words in each fake answer (stream chunks)")
    parser.add_argument("--top", type=int, default=15, help="self-time frames listed")
    parser.add_argument(
        "--pyinstrument",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also profile single requests with pyinstrument (default: yes)",
    )
    parser.add_argument("--single", type=int, default=100, help="sequential requests profiled by pyinstrument")
    parser.add_argument("--mode", choices=("both", "non-stream", "stream"), default="both")
    run.add_server_arguments(parser)
    args = parser.parse_args(argv)
    run.check_server_arguments(parser, args)
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy is not installed next to {sys.executable} (make install)")

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-profile-"))
    secret = secrets.token_urlsafe(40)
    fake_port = run.free_port()
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fake = run.start_fake_upstream(fake_port, args.tokens)
    server = None
    report = [
        f"`make profile` {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; "
        f"{'PostgreSQL + Redis' if args.postgres else 'SQLite'}; one uvicorn worker; load average at start "
        f"{os.getloadavg()[0]:.1f}.",
        "",
    ]
    files: list[Path] = []
    try:
        database_url = run.bench_database(args, workdir)
        key = run.setup_database(database_url, secret, fake_port)
        server = run.bench_server(database_url, secret, args.redis_url).start()
        log(f"fake upstream on :{fake_port}, RainyModel on {server.url} (pid {server.pid})")
        target = run.Target("rainymodel", server.port, "/v1/chat/completions", run.ALIAS, key)
        problem = run.check_answers(target)
        if problem:
            raise SystemExit(problem + "\n" + server.log_text()[-2000:])
        modes = {"both": (False, True), "non-stream": (False,), "stream": (True,)}[args.mode]
        summaries = {}
        for stream in modes:
            mode = "stream" if stream else "non-stream"
            target.load(stream, count=args.warmup)
            target.load(stream, clients=args.clients, duration=1.0)
            raw = run.RESULTS / f"profile-{stamp}-{mode}.txt"
            log(f"{mode}: recording the worker for {args.duration:g} s under {args.clients} clients")
            figures = record(server.pid, target, stream, args, raw)
            stacks = parse_raw(raw.read_text())
            summary = summarise(stacks, args.top)
            scope = run.RESULTS / f"profile-{stamp}-{mode}.speedscope.json"
            scope.write_text(json.dumps(speedscope_json(stacks, f"RainyModel worker, {mode}, {args.clients} clients")))
            files += [raw, scope]
            summaries[mode] = {"figures": figures, **summary}
            report.append(summary_markdown(mode, summary, figures))
            (run.RESULTS / f"profile-{stamp}.md").write_text("\n".join(report) + "\n")  # kept if a later step fails
            print(report[-1], flush=True)
        server.stop()
        server = None
        if args.pyinstrument:
            files += profile_single(database_url, secret, key, args, stamp)
    finally:
        if server is not None:
            server.stop()
        fake.terminate()
        fake.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
        if args.postgres:
            run.recreate_postgres(args.postgres, create=False)
    report.append("Files: " + ", ".join(f"`{f.relative_to(ROOT)}`" for f in files))
    text = "\n".join(report) + "\n"
    print(report[-1])
    (run.RESULTS / f"profile-{stamp}.md").write_text(text)
    (run.RESULTS / f"profile-{stamp}.json").write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
