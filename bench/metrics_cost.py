"""What the Prometheus metrics cost per request (docs/benchmarks.md, docs/observability.md).

Times `rainymodel_site.metrics.record_call` — the one call `Call.finish` makes per request — with realistic labels,
in prometheus-client's multiprocess mode (as under gunicorn: every value is an mmap write) and in one process's
registry (`make run`), for a call answered at the first attempt, a stream and one that failed over (two attempts).
`record_call` only adds the call to plain per-process sums; `fold` (every second, before a scrape, at shutdown)
writes them to prometheus-client, so the fold is timed too: once per fold, after calls of all three kinds.
For comparison, in the same run: the same call written straight to prometheus-client through cached label children
(what `record_call` did before folding), and through `.labels()` on every call (what caching the children saves).
Each mode runs in a fresh interpreter: the mode is fixed when prometheus_client is imported.

    .venv/bin/python bench/metrics_cost.py            # prints the table
    .venv/bin/python bench/metrics_cost.py --json     # one JSON object (what bench/run.py reads)

`make bench` runs it and adds the figures to its table. No server, no network, no database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS = 20_000


@dataclass
class Attempt:
    provider: str
    tier: str
    outcome: str
    seconds: float | None


ROW = {
    "endpoint": "chat",
    "alias": "rainymodel/auto",
    "policy": "auto",
    "tier": "premium",
    "provider": "openrouter",
    "status": 200,
    "key_prefix": "rm-abcdefgh",
    "ttft_ms": None,
    "prompt_tokens": 812,
    "completion_tokens": 230,
    "cost_usd": 0.00071,
}
ONE = [Attempt("openrouter", "premium", "ok", 0.412)]
FAILOVER = [Attempt("hf-router", "free", "http_503", 0.051), Attempt("openrouter", "premium", "ok", 0.412)]


def _time(fn, calls: int) -> float:
    """Microseconds of this process's CPU per call (process time: on a shared machine, wall time would count the
    other processes too), the best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def measure_here(calls: int) -> dict:
    """Run in this interpreter, in whatever mode PROMETHEUS_MULTIPROC_DIR says."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings_test")
    import django

    django.setup()
    from rainymodel_site import metrics

    m = metrics.METRICS
    row = dict(ROW)
    stream = {**ROW, "ttft_ms": 180}

    def uncached():
        # the direct writes below, through .labels() each time instead of the cached children
        m.requests.labels("chat", "rainymodel/auto", "auto", "premium", "openrouter", "200").inc()
        m.request_duration.labels("chat", "rainymodel/auto").observe(0.45)
        m.tokens.labels("rainymodel/auto", "openrouter", "premium", "prompt").inc(812)
        m.tokens.labels("rainymodel/auto", "openrouter", "premium", "completion").inc(230)
        m.cost.labels("rainymodel/auto", "openrouter", "premium").inc(0.00071)
        m.attempts.labels("openrouter", "premium", "ok").inc()
        m.attempt_duration.labels("openrouter", "premium").observe(0.412)

    values = ("chat", "rainymodel/auto", "auto", "premium", "openrouter", 200)
    series, attempt = m._call_series(values), m._attempt_series(("openrouter", "premium", "ok"))

    def direct():
        # a call answered at once written straight to prometheus-client (cached children): before folding
        series.requests.inc()
        series.duration.observe(0.45)
        series.prompt.inc(812)
        series.completion.inc(230)
        series.cost.inc(0.00071)
        attempt.count.inc()
        attempt.duration.observe(0.412)

    def fold_after_three_kinds():
        metrics.record_call(row, ONE, 0.45)
        metrics.record_call(stream, ONE, 0.45)
        metrics.record_call(row, FAILOVER, 0.5)
        metrics.fold()

    three_calls_us = _time(
        lambda: (
            metrics.record_call(row, ONE, 0.45),
            metrics.record_call(stream, ONE, 0.45),
            metrics.record_call(row, FAILOVER, 0.5),
        ),
        calls // 10,
    )
    result = {
        "multiprocess": bool(metrics.multiprocess_dir()),
        "one_attempt_us": _time(lambda: metrics.record_call(row, ONE, 0.45), calls),
        "stream_us": _time(lambda: metrics.record_call(stream, ONE, 0.45), calls),
        "failover_us": _time(lambda: metrics.record_call(row, FAILOVER, 0.5), calls),
        # one fold of one kind of call and 2 kinds of attempt, without the three calls that fed it
        "fold_us": _time(fold_after_three_kinds, calls // 10) - three_calls_us,
        "direct_us": _time(direct, calls),
        "uncached_labels_us": _time(uncached, calls),
    }
    metrics.fold()
    return result


def measure(calls: int = CALLS) -> dict:
    """Both modes, each in a fresh interpreter: {"multiprocess": {...}, "single": {...}}."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="rainymodel-metrics-bench-") as directory:
        for mode, env in (("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": directory}), ("single", {})):
            child_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            child_env.update(env, DJANGO_SETTINGS_MODULE="rainymodel_site.settings_test")
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--here", "--calls", str(calls)],
                cwd=ROOT,
                env=child_env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    return results


def report(results: dict | None) -> str:
    """Markdown lines for bench/run.py's table."""
    if not results:
        return ""
    lines = [
        "",
        "Metrics recording per request (bench/metrics_cost.py): µs of CPU time on the event loop. `record_call` is",
        "what each request pays; a fold (1/s, before a scrape, at shutdown) writes what was recorded since the last",
        "one, here one kind of call (with and without TTFT) and 2 of attempt. Before folding, each call was",
        "written straight away:",
        "",
        "| mode | `record_call`: answered at once | stream (+TTFT) | failed over (2 attempts) | one fold "
        "| before: written at once | same, `.labels()` uncached |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, label in (("multiprocess", "gunicorn (multiprocess files)"), ("single", "one process (`make run`)")):
        r = results[mode]
        lines.append(
            f"| {label} | {r['one_attempt_us']:.2f} | {r['stream_us']:.2f} | {r['failover_us']:.2f} | "
            f"{r['fold_us']:.1f} | {r['direct_us']:.2f} | {r['uncached_labels_us']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)  # one mode, this interpreter
    args = parser.parse_args(argv)
    if args.here:
        print(json.dumps(measure_here(args.calls)))
        return 0
    results = measure(args.calls)
    print(json.dumps(results) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
