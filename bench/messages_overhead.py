"""What POST /v1/messages (the Anthropic Messages API, translated onto chat completions) adds over
POST /v1/chat/completions for the same answer, through the same RainyModel server and fake upstream (issue 13).

    python bench/messages_overhead.py [--requests 500 --clients 16 --duration 5]

Reuses bench/run.py's setup (a fake upstream process, a SQLite database, a RainyModel worker) and its `measure`;
prints a table of latency and throughput for chat and messages, non-streamed and streamed, and the difference.
Results go to bench/results/messages-<stamp>.md.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import build_request  # noqa: E402
from bench.run import (  # noqa: E402
    ALIAS,
    MESSAGES,
    RESULTS,
    Target,
    count_log_rows,
    fmt,
    measure,
    setup_database,
    start_fake_upstream,
)
from tests.fakes.server import RainyModelServer, free_port  # noqa: E402


class MessagesTarget(Target):
    def request(self, stream: bool) -> bytes:
        body = {"model": self.model, "max_tokens": 256, "messages": MESSAGES}
        if stream:
            body["stream"] = True
        return build_request(self.port, self.path, body, self.api_key)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-bench-messages-"))
    secret = secrets.token_urlsafe(40)
    fake_port = free_port()
    fake = start_fake_upstream(fake_port, args.tokens)
    server = None
    try:
        key = setup_database(f"sqlite:///{workdir / 'bench.sqlite3'}", secret, fake_port)
        server = RainyModelServer(
            base_env={
                "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
                "SECRET_KEY": secret,
                "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            },
            env={"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": "", "LOG_LEVEL": "WARNING"},
        ).start()
        chat = Target("chat", server.port, "/v1/chat/completions", ALIAS, key)
        messages = MessagesTarget("messages", server.port, "/v1/messages", ALIAS, key)
        results = {"chat": measure(chat, args), "messages": measure(messages, args)}
        server.stop()
        sent = chat.sent + messages.sent
        rows = count_log_rows()
    finally:
        if server is not None:
            server.stop()
        fake.terminate()
        fake.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {args.requests} requests at 1 client "
        f"after {args.warmup} warmup, {args.clients} clients for {args.duration:g} s; {args.tokens} tokens.",
        "",
        "| measure | mode | chat | messages | added by the translation |",
        "|---|---|---|---|---|",
    ]
    for mode in ("non-stream", "stream"):
        c, m = results["chat"][mode], results["messages"][mode]
        for field, label in (
            ("p50_ms", "latency p50, 1 client (ms)"),
            ("p99_ms", "latency p99, 1 client (ms)"),
            ("ttfb_p50_ms", "first byte p50, 1 client (ms)"),
        ):
            lines.append(f"| {label} | {mode} | {fmt(c[field])} | {fmt(m[field])} | **{fmt(m[field] - c[field])}** |")
        lines.append(
            f"| throughput, {args.clients} clients (req/s) | {mode} | {c['throughput_rps']:.0f} | "
            f"{m['throughput_rps']:.0f} | |"
        )
    errors = sum(
        results[t][m]["errors_1_client"] + results[t][m]["errors_concurrent"]
        for t in results
        for m in ("non-stream", "stream")
    )
    lines += ["", f"- Failed requests: {errors}. Request log: {rows} rows for {sent} requests sent."]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"messages-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(table)
    return 0 if errors == 0 and rows == sent else 1


if __name__ == "__main__":
    sys.exit(main())
