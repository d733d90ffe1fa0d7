"""What traces and JSON log lines cost per request (docs/benchmarks.md, "Traces and JSON log lines").

Starts the fake upstream and four RainyModel servers (one uvicorn worker each, as `make run`) on one fresh SQLite
database: tracing and JSON log lines off; traces on, exporting over OTLP/HTTP to a receiver on loopback
(tests/fakes/otlp.py, in this process); JSON log lines on (stderr to a file); both. It then sends `--requests`
non-streaming chat completions at 1 client to each server in turn, `--rounds` times (interleaved, so a noisy
machine hits every mode alike), and reports per mode the server's CPU time per request (utime + stime of the worker
from /proc, which includes the span exporter's thread and the log listener's thread) and the p50 latency, with
the difference from "off". The CPU figure is the steadier one on a shared machine.

Then, in this process, the CPU time the hooks cost for one call (`Call.begin`, an attempt,
`Call.finish`; the request log's queue left out): off; traces on (in production ending a span only queues it for
the exporter's thread; here spans go to an exporter that drops them, so the figure leaves out the export's own
CPU, which is in the server figures above); JSON log lines on (QueueHandler: the line is formatted on the loop and
written by the listener thread, to /dev/null; both counted); both.

    .venv/bin/python bench/observability_cost.py [--requests 1000] [--rounds 5]

It checks that every traced request's two spans (call and attempt) reached the receiver and that every logged
request wrote one line. It never sends traffic beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import build_request, percentile, run_load  # noqa: E402
from bench.procstat import cpu_seconds  # noqa: E402
from bench.run import ALIAS, body_for, setup_database, start_fake_upstream  # noqa: E402
from tests.fakes.otlp import OtlpReceiver  # noqa: E402
from tests.fakes.server import RainyModelServer, free_port  # noqa: E402


def log(message: str) -> None:
    print(f"[observability] {message}", file=sys.stderr, flush=True)


def hooks_cost(calls: int, reps: int) -> dict[str, float]:
    """µs per call of the request path's observability hooks, in this process (Django set up by setup_database)."""
    from django.test import RequestFactory

    from rainymodel_site import log_lines, tracing
    from routing import snapshot
    from routing.proxy.call import AttemptUsage, Call
    from usage import writer

    # The log writer's queue is left out: its thread would start writing the rows to the bench database meanwhile.
    writer.enqueue = lambda row: None
    snapshot.ensure_loaded()
    route = snapshot.current().aliases[ALIAS].routes[0]
    request = RequestFactory().post(
        "/v1/chat/completions", data=b"{}", content_type="application/json", headers={"authorization": "Bearer x"}
    )

    async def one_call():
        call = Call.begin(request)
        call.requested_model = ALIAS
        started = time.monotonic()
        if call.trace is not None:
            tracing.attempt_started(call, route)
        call.record_attempt(route, "ok", 200, started=started)
        call.route = route
        call.usages.append(AttemptUsage(route=route, prompt_tokens=10, completion_tokens=20))
        await call.finish(200)

    async def run(n: int) -> float:
        # CPU time of the whole process (every thread: the log listener's too), not wall time: on a shared machine
        # other processes' load would be counted otherwise.
        began = time.process_time()
        for _ in range(n):
            await one_call()
        return (time.process_time() - began) / n * 1e6

    from django.conf import settings
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        """Spans end, are handed over and dropped: what is left is the cost on the event loop."""

        def export(self, spans):
            return SpanExportResult.SUCCESS

    costs: dict[str, float] = {}
    modes = ("off", "traces", "json log lines", "both")
    # Interleaved short runs, the best of each mode: what a call costs when nothing else takes the CPU.
    for _ in range(reps):
        for mode in modes:
            if mode in ("traces", "both"):
                tracing.start(Discard())
            if mode in ("json log lines", "both"):
                settings.RAINYMODEL_LOG_REQUESTS = "json"
                log_lines.start(open(os.devnull, "w"))
            asyncio.run(run(100))  # warm
            cost = asyncio.run(run(calls))
            costs[mode] = min(costs.get(mode, cost), cost)
            tracing.stop()
            log_lines.stop()
            settings.RAINYMODEL_LOG_REQUESTS = "off"
    return costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per mode and round, at 1 client")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1000, help="calls through the hooks alone, per mode and rep")
    parser.add_argument("--reps", type=int, default=20, help="interleaved runs of --calls per mode; the best counts")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-observability-"))
    secret = secrets.token_urlsafe(40)
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    fake_port = free_port()
    fake = start_fake_upstream(fake_port, 20)
    receiver = OtlpReceiver().start()
    servers: dict[str, RainyModelServer] = {}
    try:
        key = setup_database(database_url, secret, fake_port)
        base_env = {"DJANGO_SETTINGS_MODULE": "rainymodel_site.settings", "SECRET_KEY": secret}
        traces = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        json_lines = {"RAINYMODEL_LOG_REQUESTS": "json"}
        modes = {"off": {}, "traces": traces, "json log lines": json_lines, "both": {**traces, **json_lines}}
        for mode, env in modes.items():
            servers[mode] = RainyModelServer(
                base_env={**base_env, "DATABASE_URL": database_url},
                env={"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": "", "LOG_LEVEL": "WARNING", **env},
                # as `make run`: uvloop and httptools
                extra_args=("--loop", "uvloop", "--http", "httptools"),
            ).start()
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        latencies: dict[str, list[float]] = {mode: [] for mode in modes}
        sent = dict.fromkeys(modes, 0)
        for mode, server in servers.items():
            request = build_request(server.port, "/v1/chat/completions", body_for(False, ALIAS), key)
            result = asyncio.run(run_load(server.port, request, stream=False, count=args.warmup))
            sent[mode] += result.sent
        for round_ in range(args.rounds):
            for mode, server in servers.items():
                request = build_request(server.port, "/v1/chat/completions", body_for(False, ALIAS), key)
                assert server.pid is not None  # started
                before = cpu_seconds(server.pid)
                result = asyncio.run(run_load(server.port, request, stream=False, count=args.requests))
                cpu[mode].append((cpu_seconds(server.pid) - before) / result.sent * 1e6)
                latencies[mode].extend(result.latencies)
                sent[mode] += result.sent
                if result.errors:
                    log(f"{mode}: {result.errors} errors, e.g. {result.error_samples[:2]}")
                    return 2
            log(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{m} {cpu[m][-1]:.0f} µs" for m in modes))
        for server in servers.values():
            server.stop()
        spans = len(receiver.spans)
        expected_spans = 2 * (sent["traces"] + sent["both"])
        lines = {mode: servers[mode].log_text().count('{"ts":') for mode in modes}
        problems = []
        if spans != expected_spans:
            problems.append(f"the receiver got {spans} spans, expected {expected_spans}")
        for mode in ("json log lines", "both"):
            if lines[mode] != sent[mode]:
                problems.append(f"{mode}: {lines[mode]} lines for {sent[mode]} requests")
        if problems:
            log("; ".join(problems))
            return 2
        hooks = hooks_cost(args.calls, args.reps)
    finally:
        for server in servers.values():
            server.stop()
        receiver.stop()
        fake.kill()

    base_cpu = statistics.median(cpu["off"])
    base_p50 = percentile(latencies["off"], 50) * 1000
    out = [
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {args.rounds} rounds of {args.requests} non-streaming requests at 1 "
        f"client per mode, after {args.warmup} warmup; {spans} spans received, every line written.",
        "",
        "| mode | server CPU per request (µs, median of rounds) | added | latency p50 (ms) | added |",
        "|---|---|---|---|---|",
    ]
    for mode in modes:
        mode_cpu = statistics.median(cpu[mode])
        p50 = percentile(latencies[mode], 50) * 1000
        added_cpu = "" if mode == "off" else f"**{mode_cpu - base_cpu:+.0f}**"
        added_p50 = "" if mode == "off" else f"{p50 - base_p50:+.2f}"
        out.append(f"| {mode} | {mode_cpu:.0f} | {added_cpu} | {p50:.2f} | {added_p50} |")
    out += [
        "",
        f"The hooks alone, in one process, best of {args.reps} interleaved runs of {args.calls} calls (`Call.begin`, "
        "one attempt, `Call.finish`):",
        "",
        "| mode | CPU µs per call (all threads) | added |",
        "|---|---|---|",
    ]
    for mode, cost in hooks.items():
        added = "" if mode == "off" else f"**{cost - hooks['off']:+.1f}**"
        out.append(f"| {mode} | {cost:.1f} | {added} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
