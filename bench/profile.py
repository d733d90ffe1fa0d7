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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.procstat import CpuMeter  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
PROJECT_APPS = {"routing", "apikeys", "limits", "usage", "rainymodel_site", "responses_store"}

# Areas, from the package of a frame's file. Standard-library helpers (json, logging, contextlib, ...) are not areas
# of their own: their time goes to the caller that used them (see `area_of_stack`).
AREAS = {
    "upstream client (httpx, httpcore, h11, anyio)": {"httpx", "httpcore", "h11", "anyio", "sniffio", "httpx_aiohttp"},
    "upstream client (aiohttp)": {"aiohttp", "aiohappyeyeballs", "multidict", "yarl", "propcache", "frozenlist"},
    "asyncio event loop": {"asyncio", "selectors", "uvloop", "concurrent"},
    "uvicorn / gunicorn": {"uvicorn", "uvicorn_worker", "httptools", "gunicorn", "h2"},
    "Django": {"django", "asgiref"},
    "DRF / adrf": {"rest_framework", "adrf"},
    "orjson": {"orjson"},
    "prometheus_client": {"prometheus_client"},
    "opentelemetry": {"opentelemetry"},
    "database driver (sqlite3, psycopg)": {"sqlite3", "psycopg", "psycopg_pool", "_sqlite3"},
    "redis client": {"redis"},
}
AREA_OF_PACKAGE = {package: area for area, packages in AREAS.items() for package in packages}
# Standard-library modules that are an area (the event loop, the database driver); every other stdlib module is a
# helper whose time belongs to its caller.
STDLIB_AREAS = {"asyncio", "selectors", "concurrent", "sqlite3"}
# Threads other than the event loop, recognised by the file of the first frame below threading's bootstrap.
THREADS = {
    "usage/writer.py": "log-writer thread",
    "routing/snapshot.py": "snapshot refresher thread",
    "concurrent/futures/thread.py": "thread pool (sync_to_async / run_blocking)",
}
# Leaf frames of a thread blocked in a wait with a timeout, which py-spy sometimes reports as active: not CPU.
WAITS = {"Condition.wait (threading.py)", "Event.wait (threading.py)"}
WAITING = "threads waiting (Event.wait seen as active by py-spy; not CPU)"

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
STDLIB = os.path.dirname(os.__file__)


def log(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


# --- reading py-spy's raw output ----------------------------------------------------------------------------------


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one line per distinct stack, `root;...;leaf COUNT`."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def module_of(frame: str) -> tuple[str, str, str]:
    """(kind, package, short file) of a frame: kind is "project", "stdlib", "package" or "other"."""
    match = FRAME.match(frame)
    path = match.group("file") if match else frame
    if "site-packages/" in path:
        short = path.split("site-packages/", 1)[1]
        return "package", short.split("/", 1)[0].removesuffix(".py"), short
    if path.startswith(str(ROOT) + "/"):
        short = path[len(str(ROOT)) + 1 :]
        return "project", short.split("/", 1)[0].removesuffix(".py"), short
    if path.startswith(STDLIB + "/"):
        short = path[len(STDLIB) + 1 :]
        return "stdlib", short.split("/", 1)[0].removesuffix(".py"), short
    return "other", path, path


def short_frame(frame: str) -> str:
    """`func (file)` with the file relative to the project, site-packages or the standard library, no line."""
    match = FRAME.match(frame)
    if not match:
        return frame
    return f"{match.group('func')} ({module_of(frame)[2]})"


def thread_of(stack: list[str]) -> str:
    """Which thread a stack is from: the event loop unless it starts in threading's bootstrap."""
    if not stack or module_of(stack[0])[2] != "threading.py":
        return "event loop thread"
    for frame in stack:
        file = module_of(frame)[2]
        if file != "threading.py":
            return THREADS.get(file, "other threads")
    return "other threads"


def area_of_stack(stack: list[str]) -> str:
    """The area a sample's self time belongs to: the leaf frame's package, except that a standard-library helper
    (anything but the event loop and the database driver) hands its time to the nearest caller outside the stdlib."""
    if short_frame(stack[-1]) in WAITS:
        return WAITING
    thread = thread_of(stack)
    if thread != "event loop thread":
        return thread
    for frame in reversed(stack):
        kind, package, _ = module_of(frame)
        if kind == "stdlib" and package not in STDLIB_AREAS:
            continue
        if kind == "project":
            return f"RainyModel: {package}/" if package in PROJECT_APPS else f"bench/tests code ({package})"
        if kind == "other":
            continue
        return AREA_OF_PACKAGE.get(package, f"other: {package}")
    return "standard library (no caller outside it)"


def summarise(stacks: list[tuple[list[str], int]], top: int = 15) -> dict:
    total = sum(count for _, count in stacks)
    areas: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    writer_areas: Counter[str] = Counter()
    for stack, count in stacks:
        areas[area_of_stack(stack)] += count
        thread = thread_of(stack)
        threads[thread] += count
        leaves[short_frame(stack[-1])] += count
        if area_of_stack(stack) == "log-writer thread":
            writer_areas[area_of_stack_ignoring_thread(stack)] += count
    return {
        "samples": total,
        "areas": areas.most_common(),
        "threads": threads.most_common(),
        "top_frames": leaves.most_common(top),
        "writer_areas": writer_areas.most_common(6),
    }


def area_of_stack_ignoring_thread(stack: list[str]) -> str:
    """`area_of_stack` for a stack of another thread, as if it ran on the event loop (what the writer spends in)."""
    return area_of_stack(["<main>"] + [f for f in stack if not f.startswith("_bootstrap")][1:])


def summary_markdown(mode: str, summary: dict, figures: dict) -> str:
    total = summary["samples"] or 1
    lines = [
        f"**{mode}**: {summary['samples']} samples of non-idle stacks ({figures['rate']} Hz, "
        f"{figures['duration']:g} s, all threads), {figures['requests']} requests at {figures['clients']} clients "
        f"({figures['rps']:.0f} req/s under the profiler); worker CPU **{figures['cpu_ms_per_request']:.2f} ms per "
        f"request**; py-spy errors {figures['errors']}.",
        "",
        "| area (self time; stdlib helpers counted in their caller) | share of samples |",
        "|---|---:|",
    ]
    lines += [f"| {area} | {100 * count / total:.1f} % |" for area, count in summary["areas"]]
    if summary["writer_areas"]:
        inside = ", ".join(f"{a} {100 * c / total:.1f} %" for a, c in summary["writer_areas"])
        lines += ["", f"Inside the log-writer thread: {inside}."]
    lines += ["", "| top self-time frames | share |", "|---|---:|"]
    lines += [f"| `{frame}` | {100 * count / total:.1f} % |" for frame, count in summary["top_frames"]]
    return "\n".join(lines) + "\n"


def speedscope_json(stacks: list[tuple[list[str], int]], name: str) -> dict:
    """The raw stacks as a speedscope file (https://www.speedscope.app/file-format-schema.json). Converted here
    because py-spy writes one format per recording, and a second recording would double its overhead and sample a
    different window."""
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks:
        samples.append([frames.setdefault(short_frame(f), len(frames)) for f in stack])
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "bench/profile.py",
    }


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
