"""Summaries of py-spy's raw stacks for `make profile` (bench/profile.py): which area of the code and which
thread each sample's time belongs to, the top self-time frames, and a speedscope file. docs/benchmarks.md,
"Reading a profile", explains the rules.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_APPS = {"routing", "apikeys", "limits", "usage", "rainymodel_site", "responses_store", "alerts", "audit"}

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
    "alerts/dispatch.py": "alert dispatcher thread",
    "concurrent/futures/thread.py": "thread pool (sync_to_async / run_blocking)",
}
# Leaf frames of a thread blocked in a wait with a timeout, which py-spy sometimes reports as active: not CPU.
WAITS = {"Condition.wait (threading.py)", "Event.wait (threading.py)"}
WAITING = "threads waiting (Event.wait seen as active by py-spy; not CPU)"

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
STDLIB = os.path.dirname(os.__file__)


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
