"""Drive RainyModel's ASGI application in this process, without an HTTP server (issue 16; run by hand).

    .venv/bin/python bench/inprocess.py [--requests 2000] [--warmup 200] [--stream] [--profile]

Sends `--requests` `POST /v1/chat/completions` one after another straight to `rainymodel_site.asgi.application`
as ASGI messages (the fake upstream runs on loopback as its own process, as in `make bench`), then flushes the
request log once, and prints the thread CPU per request. Without uvicorn and a load generator in the measurement,
what remains is RainyModel's own request path plus the upstream client; `--profile` adds cProfile's time per
package. bench/instructions.py runs this under callgrind for counts that do not depend on the machine's load.
Run from the root of the tree to measure (it imports the tree it is started in).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

from bench.run import ALIAS, setup_database, start_fake_upstream  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--callgrind", action="store_true", help="run under valgrind --instr-atstart=no: instrument only the requests"
    )
    args = parser.parse_args()
    os.environ["RAINYMODEL_LOG_FLUSH_S"] = "100000"  # the log is flushed once, at the end, by this script
    # No background work that depends on wall time (under callgrind, time runs ~50x slower): the snapshot
    # refresher would poll the config version many more times there than here.
    os.environ["RAINYMODEL_SNAPSHOT_POLL_S"] = "100000"
    port = free_port()
    fake = start_fake_upstream(port, 20)
    try:
        key = setup_database(f"sqlite:///{tempfile.mkdtemp()}/db.sqlite3", secrets.token_urlsafe(40), port)
        import orjson
        import uvloop

        from rainymodel_site.asgi import application
        from usage import writer

        body = orjson.dumps(
            {"model": ALIAS, "messages": [{"role": "user", "content": "Say something short."}], "stream": args.stream}
        )
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"user-agent", b"rainymodel-bench"),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

        async def one() -> None:
            done = asyncio.Event()
            pending = [{"type": "http.request", "body": body, "more_body": False}]
            status = []

            async def receive():
                if pending:
                    return pending.pop()
                await done.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                elif not message.get("more_body"):
                    done.set()

            await application(dict(scope), receive, send)
            done.set()
            if status != [200]:
                raise SystemExit(f"answer {status}")

        async def run() -> tuple[float, cProfile.Profile | None]:
            startup = asyncio.Queue()
            await startup.put({"type": "lifespan.startup"})
            sent: asyncio.Queue = asyncio.Queue()
            life = asyncio.create_task(application({"type": "lifespan"}, startup.get, sent.put))
            await sent.get()
            for _ in range(args.warmup):
                await one()
            await asyncio.to_thread(writer.flush)
            profile = cProfile.Profile() if args.profile else None
            began = time.process_time()
            if args.callgrind:
                callgrind("on")
            if profile:
                profile.enable()
            for _ in range(args.requests):
                await one()
            await asyncio.to_thread(writer.flush)
            if profile:
                profile.disable()
            if args.callgrind:
                callgrind("off")
            cpu = time.process_time() - began
            await startup.put({"type": "lifespan.shutdown"})
            await life
            return cpu, profile

        cpu, profile = uvloop.run(run())
        mode = "stream" if args.stream else "non-stream"
        print(f"{mode}: process CPU per request {cpu / args.requests * 1e6:.0f} µs over {args.requests} requests")
        if profile:
            by_package: collections.Counter = collections.Counter()
            for (path, _, name), (_, _, own, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
                by_package[package_of(path, name)] += own
            total = sum(by_package.values())
            for package, own in by_package.most_common(20):
                print(f"{own / total * 100:5.1f} %  {package}")
    finally:
        fake.terminate()
        fake.wait(10)


def callgrind(state: str) -> None:
    """Turn valgrind's instrumentation of this process on or off (callgrind_control talks to it over a file)."""
    subprocess.run(["callgrind_control", "--instr=" + state, str(os.getpid())], check=True, capture_output=True)


PACKAGES = ("django", "rest_framework", "adrf", "httpx", "httpcore", "anyio", "h11", "asyncio", "uvloop", "orjson")
OURS = ("routing", "usage", "apikeys", "limits", "rainymodel_site", "responses_store")


def package_of(path: str, name: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    parts = path.replace(os.getcwd() + "/", "").split("/")
    if parts[0] in OURS:
        return "RainyModel: " + parts[0]
    if path == "~":
        return "builtins: " + name.split(" of ")[0][:60]
    return parts[-1]


if __name__ == "__main__":
    main()
