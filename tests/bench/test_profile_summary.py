"""`make profile`'s summary of py-spy samples (bench/stacks.py): which area and thread a stack's time belongs to.

The stacks are written as py-spy writes them with `--format raw --full-filenames`; the paths are this machine's
(project, site-packages, standard library), so the classification is tested against the real layout.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from bench import stacks as profile
from bench.procstat import CpuMeter, cpu_seconds

SITE = Path(pytest.__file__).resolve().parent.parent  # site-packages
STDLIB = Path(os.__file__).parent
ROOT = profile.ROOT


def site(package_path: str, func: str, line: int = 1) -> str:
    return f"{func} ({SITE / package_path}:{line})"


def std(module_path: str, func: str, line: int = 1) -> str:
    return f"{func} ({STDLIB / module_path}:{line})"


def project(path: str, func: str, line: int = 1) -> str:
    return f"{func} ({ROOT / path}:{line})"


LOOP = [std("asyncio/runners.py", "Runner.run"), site("uvicorn/protocols/http/httptools_impl.py", "run_asgi")]
THREAD = [
    std("threading.py", "Thread._bootstrap"),
    std("threading.py", "Thread._bootstrap_inner"),
    std("threading.py", "Thread.run"),
]


def test_leaf_package_names_the_area():
    stack = LOOP + [project("routing/proxy/upstream.py", "_send"), site("httpcore/_utils.py", "is_socket_readable")]
    assert profile.area_of_stack(stack) == "upstream client (httpx, httpcore, h11, anyio)"
    assert profile.area_of_stack(LOOP + [project("routing/proxy/relay.py", "Relay._check")]) == "RainyModel: routing/"
    assert profile.area_of_stack(LOOP + [site("django/http/request.py", "HttpHeaders.__init__")]) == "Django"
    assert profile.area_of_stack(LOOP + [site("adrf/views.py", "APIView.async_dispatch")]) == "DRF / adrf"
    assert profile.area_of_stack(LOOP) == "uvicorn / gunicorn"
    assert profile.area_of_stack(LOOP[:1]) == "asyncio event loop"


def test_stdlib_helpers_count_in_their_caller_but_the_event_loop_is_an_area():
    helper = LOOP + [project("usage/writer.py", "LogWriter.add"), std("json/encoder.py", "JSONEncoder.encode")]
    assert profile.area_of_stack(helper) == "RainyModel: usage/"
    loop = LOOP + [project("routing/proxy/flow.py", "serve"), std("asyncio/timeouts.py", "Timeout.reschedule")]
    assert profile.area_of_stack(loop) == "asyncio event loop"


def test_threads_are_told_apart_by_their_entry_frame():
    writer = THREAD + [project("usage/writer.py", "LogWriter._run"), site("django/db/models/fields/__init__.py", "f")]
    snapshot = THREAD + [project("routing/snapshot.py", "_run_refresher"), project("routing/snapshot.py", "load")]
    pool = THREAD + [std("concurrent/futures/thread.py", "_worker"), site("asgiref/sync.py", "thread_handler")]
    assert profile.area_of_stack(writer) == "log-writer thread"
    assert profile.area_of_stack(snapshot) == "snapshot refresher thread"
    assert profile.area_of_stack(pool) == "thread pool (sync_to_async / run_blocking)"
    # The request path calls usage/writer.py too (to queue a row): that is the event loop's time, not the thread's.
    assert profile.area_of_stack(LOOP + [project("usage/writer.py", "LogWriter.add")]) == "RainyModel: usage/"
    waiting = THREAD + [project("usage/writer.py", "LogWriter._run"), std("threading.py", "Event.wait")]
    assert profile.area_of_stack(waiting) == profile.WAITING


def test_summary_counts_raw_lines_and_lists_top_frames():
    writer = THREAD + [project("usage/writer.py", "LogWriter._run"), site("django/db/models/query.py", "f")]
    relay = LOOP + [project("routing/proxy/relay.py", "Relay._check", 40)]
    raw = "\n".join(
        [
            ";".join(writer) + " 30",
            ";".join(relay) + " 60",
            ";".join(LOOP[:-1] + [project("routing/proxy/relay.py", "Relay._check", 41)]) + " 10",
            "",
        ]
    )
    summary = profile.summarise(profile.parse_raw(raw))
    assert summary["samples"] == 100
    assert dict(summary["areas"]) == {"RainyModel: routing/": 70, "log-writer thread": 30}
    # lines of one function are one frame
    assert summary["top_frames"][0] == ("Relay._check (routing/proxy/relay.py)", 70)
    assert dict(summary["writer_areas"]) == {"Django": 30}
    figures = {"rate": 200, "duration": 10, "requests": 5, "clients": 32, "rps": 1, "cpu_ms_per_request": 2.0}
    text = profile.summary_markdown("non-stream", summary, {**figures, "errors": 0})
    assert "| RainyModel: routing/ | 70.0 % |" in text and "| log-writer thread | 30.0 % |" in text
    scope = profile.speedscope_json(profile.parse_raw(raw), "test")
    json.dumps(scope)
    assert sum(scope["profiles"][0]["weights"]) == 100
    assert len(scope["shared"]["frames"]) == len({profile.short_frame(f) for f in writer + relay})


def test_cpu_meter_reads_a_busy_process_from_proc():
    import subprocess

    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        time.sleep(0.3)
        meter = CpuMeter({"busy": [busy.pid]}).start()
        time.sleep(0.5)
        spent = meter.stop()
    finally:
        busy.kill()
        busy.wait()
    assert spent["busy"] > 0.0  # it spins: some CPU time, however little a loaded machine gives it
    assert spent["machine_busy"] >= spent["busy"] - 0.02
    assert cpu_seconds(busy.pid) == 0.0  # gone
