"""The RainyModel load benchmark (`make bench`, SPEC §10). Reproducible on one machine, loopback only:

1. starts the fake upstream as its own process (`python -m tests.fakes.upstream`, answers ok at once);
2. migrates a fresh SQLite database in a temporary directory, creates a route to the fake and an API key whose
   rpm limit is far above the load (so logging and limits run on every request, but never trigger);
3. starts RainyModel with ONE uvicorn worker on that database;
4. measures, non-streaming and streaming: latency at 1 client (p50/p99 over --requests requests, after a warmup)
   calling the fake directly and through RainyModel, hence the latency RainyModel adds; throughput at
   --clients concurrent clients (req/s over --duration seconds); the worker's resident memory from /proc;
   then the same for `POST /v1/embeddings` (non-streaming only; `--no-embeddings` skips it);
5. stops RainyModel gracefully and checks the request log holds exactly one row per request sent;
6. with --with-litellm, installs the LiteLLM proxy into bench/.litellm-venv and measures it the same way.

Prints a markdown table and writes it (plus raw JSON) to bench/results/. It never sends traffic beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import metrics_cost  # noqa: E402
from bench.loadgen import build_request, percentile, run_load  # noqa: E402
from tests.fakes.server import RainyModelServer, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LITELLM_VENV = ROOT / "bench" / ".litellm-venv"
ALIAS = "rainymodel/auto"
MESSAGES = [{"role": "user", "content": "Say something short for the benchmark."}]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------------------------------


def start_fake_upstream(port: int, tokens: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port), "--tokens", str(tokens)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise SystemExit(f"fake upstream did not start: {line}{process.stdout.read()}")
    return process


def setup_database(database_url: str, secret: str, fake_port: int) -> str:
    """Migrate, create the route to the fake and a key; returns the full key. Runs Django in this process."""
    os.environ.update(
        {"DJANGO_SETTINGS_MODULE": "rainymodel_site.settings", "SECRET_KEY": secret, "DATABASE_URL": database_url}
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    from apikeys.services import apikey_create
    from tests.fakes.routing_config import make_routing, upstream

    call_command("migrate", verbosity=0, interactive=False)
    make_routing(upstream(f"http://127.0.0.1:{fake_port}/v1", tier="free", name="fake", max_retries=0), alias=ALIAS)
    _, full_key = apikey_create(name="bench", rpm_limit=100_000_000)
    return full_key


def count_log_rows() -> int:
    from django.db import connection

    from usage.models import RequestLog

    connection.close()  # the server wrote the rows; read them afresh
    return RequestLog.objects.count()


def bench_server(database_url: str, secret: str, redis_url: str | None = None, server_class=None, **kwargs):
    """RainyModel as the benchmark runs it (not started): one uvicorn worker unless `server_class` says otherwise."""
    return (server_class or RainyModelServer)(
        base_env={
            "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
            "SECRET_KEY": secret,
            "DATABASE_URL": database_url,
        },
        # Production flush interval; the limits run (the key has an rpm limit), against the in-process store unless
        # --redis-url gives the shared one.
        env={"RAINYMODEL_LOG_FLUSH_S": "1.0", "REDIS_URL": redis_url or "", "LOG_LEVEL": "WARNING"},
        **kwargs,
    )


def bench_database(args, workdir: Path) -> str:
    """The database the run uses: SQLite in `workdir`, or with --postgres that PostgreSQL database made afresh
    (dropped first if it exists; `drop_bench_database` drops it at the end). With --redis-url, empties that Redis
    database (FLUSHDB of that one database only), so limits and breakers start from nothing."""
    if args.redis_url:
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    if not args.postgres:
        return f"sqlite:///{workdir / 'bench.sqlite3'}"
    recreate_postgres(args.postgres, create=True)
    return args.postgres


def recreate_postgres(url: str, create: bool) -> None:
    """Drop (and with `create`, create again) the PostgreSQL database named by `url`; it must have "bench" in its
    name, so a mistyped URL can never drop a real database."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"--postgres: the database name must contain 'bench' (it is dropped and created): {name!r}")
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if create:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- LiteLLM ------------------------------------------------------------------------------------------------------


def install_litellm() -> tuple[Path | None, str]:
    """Install the LiteLLM proxy into its own virtualenv; returns (litellm executable, note)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe, "already installed"
    log("installing litellm[proxy] into bench/.litellm-venv (this takes a while)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True)
        pip = subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"installation failed: {exc}"
    if pip.returncode != 0 or not exe.exists():
        tail = (pip.stderr or pip.stdout).strip().splitlines()[-3:]
        return None, "installation failed: " + " | ".join(tail)
    return exe, "installed"


def start_litellm(exe: Path, port: int, fake_port: int, workdir: Path) -> tuple[subprocess.Popen | None, str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {ALIAS}\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: http://127.0.0.1:{fake_port}/v1\n"
        "      api_key: sk-fake\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    logfile = open(workdir / "litellm.log", "w")
    env = {**os.environ, "LITELLM_TELEMETRY": "False", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        cwd=workdir,
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None, "LiteLLM exited at startup: " + (workdir / "litellm.log").read_text()[-500:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                return process, "running"
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    return None, "LiteLLM did not become healthy within 120 s"


def rss_of(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes of a process and its children."""
    rss = hwm = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return rss, hwm


# --- measurement --------------------------------------------------------------------------------------------------


def body_for(stream: bool, model: str) -> dict:
    body = {"model": model, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    return body


class Target:
    """Something to send load to: the fake directly, RainyModel, or LiteLLM."""

    def __init__(self, name: str, port: int, path: str, model: str, api_key: str | None):
        self.name, self.port, self.path, self.model, self.api_key = name, port, path, model, api_key
        self.sent = 0

    def request(self, stream: bool) -> bytes:
        return build_request(self.port, self.path, body_for(stream, self.model), self.api_key)

    def load(self, stream: bool, **kwargs):
        result = asyncio.run(run_load(self.port, self.request(stream), stream=stream, **kwargs))
        self.sent += result.sent
        if result.errors:
            log(f"{self.name}: {result.errors} of {result.sent} requests failed, e.g. {result.error_samples[:2]}")
        return result


class ResponsesTarget(Target):
    """RainyModel's POST /v1/responses with the same prompt: translated onto the same chat upstream."""

    def request(self, stream: bool) -> bytes:
        body = {"model": self.model, "input": MESSAGES[0]["content"]}
        if stream:
            body["stream"] = True
        return build_request(self.port, self.path, body, self.api_key)


class MessagesTarget(Target):
    """RainyModel's POST /v1/messages (Anthropic) with the same prompt: translated onto the same chat upstream."""

    def request(self, stream: bool) -> bytes:
        body: dict = {"model": self.model, "max_tokens": 256, "messages": MESSAGES}
        if stream:
            body["stream"] = True
        return build_request(self.port, self.path, body, self.api_key)


class CompletionsTarget(Target):
    """POST /v1/completions (fill-in-the-middle: a prompt and a suffix), to the fake directly or through RainyModel."""

    def request(self, stream: bool) -> bytes:
        body: dict = {"model": self.model, "prompt": MESSAGES[0]["content"], "suffix": "\n# end"}
        if stream:
            body["stream"] = True
        return build_request(self.port, self.path, body, self.api_key)


# Endpoints measured beside chat: results key -> what the report calls it.
BESIDE_CHAT = {"responses": "/v1/responses", "messages": "/v1/messages", "completions": "/v1/completions"}


def responses_rows(results: dict) -> list[str]:
    """Report rows for each endpoint measured beside chat: what it adds over the fake, and over chat completions."""
    lines: list[str] = []
    for key, title in BESIDE_CHAT.items():
        if key in results:
            lines += _beside_chat_rows(results, key, title)
    return lines


def _beside_chat_rows(results: dict, key: str, title: str) -> list[str]:
    # Completions are compared with the fake's own /v1/completions; the translated endpoints with its chat.
    direct = results.get(f"{key}_direct", results["direct"])
    chat, resp = results["rainymodel"], results[key]
    lines = [
        "",
        f"| {title} | mode | fake upstream direct | RainyModel chat | RainyModel {key} | "
        "added by RainyModel | added over chat |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("non-stream", "stream"):
        for key, label in (("p50_ms", "latency p50, 1 client (ms)"), ("p99_ms", "latency p99, 1 client (ms)")):
            lines.append(
                f"| {label} | {mode} | {fmt(direct[mode][key])} | {fmt(chat[mode][key])} | "
                f"{fmt(resp[mode][key])} | **{fmt(resp[mode][key] - direct[mode][key])}** | "
                f"{fmt(resp[mode][key] - chat[mode][key])} |"
            )
        lines.append(
            f"| throughput (req/s) | {mode} | {direct[mode]['throughput_rps']:.0f} | "
            f"{chat[mode]['throughput_rps']:.0f} | **{resp[mode]['throughput_rps']:.0f}** | | |"
        )
    return lines


def measure(target: Target, args, requests: int | None = None) -> dict:
    requests = requests or args.requests
    figures = {}
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        target.load(stream, count=args.warmup)
        single = target.load(stream, count=requests)
        log(f"{target.name} {mode}: 1 client p50 {percentile(single.latencies, 50) * 1000:.2f} ms")
        many = target.load(stream, clients=args.clients, duration=args.duration)
        log(f"{target.name} {mode}: {args.clients} clients {many.throughput():.0f} req/s")
        figures[mode] = {
            "p50_ms": percentile(single.latencies, 50) * 1000,
            "p99_ms": percentile(single.latencies, 99) * 1000,
            "ttfb_p50_ms": percentile(single.ttfb, 50) * 1000,
            "requests_1_client": single.sent,
            "errors_1_client": single.errors,
            "throughput_rps": many.throughput(),
            "errors_concurrent": many.errors,
            "concurrent_p50_ms": percentile(many.latencies, 50) * 1000,
            "concurrent_p99_ms": percentile(many.latencies, 99) * 1000,
        }
    return figures


def check_answers(target: Target) -> str | None:
    """One request each way, so a broken endpoint fails fast with its own error instead of 2000 timeouts."""
    for stream in (False, True):
        result = target.load(stream, count=1)
        if result.errors:
            return (
                f"{target.name} does not answer {'streaming ' if stream else ''}chat completions: "
                f"{result.error_samples}"
            )
    return None


class EmbeddingsTarget(Target):
    """POST /v1/embeddings (issue 12): one short string, float vectors (the fake's vector has --tokens numbers)."""

    def request(self, stream: bool) -> bytes:
        body = {"model": self.model, "input": "Embed this sentence for the benchmark.", "encoding_format": "float"}
        return build_request(self.port, self.path, body, self.api_key)


def measure_embeddings(target: Target, args) -> dict:
    """`measure` for embeddings: no streaming, so the non-stream figures only."""
    target.load(False, count=args.warmup)
    single = target.load(False, count=args.requests)
    many = target.load(False, clients=args.clients, duration=args.duration)
    log(
        f"{target.name} embeddings: 1 client p50 {percentile(single.latencies, 50) * 1000:.2f} ms, "
        f"{args.clients} clients {many.throughput():.0f} req/s"
    )
    return {
        "p50_ms": percentile(single.latencies, 50) * 1000,
        "p99_ms": percentile(single.latencies, 99) * 1000,
        "requests_1_client": single.sent,
        "errors_1_client": single.errors,
        "throughput_rps": many.throughput(),
        "errors_concurrent": many.errors,
    }


def report_embeddings(results: dict, args) -> str:
    """The embeddings rows, beside chat's non-stream rows of the same run."""
    if "embeddings_direct" not in results:
        return ""
    lines = [
        "",
        "Embeddings (same run, same server; `--no-embeddings` skips them), beside chat non-stream:",
        "",
        "| measure | endpoint | fake upstream direct | RainyModel | added by RainyModel |",
        "|---|---|---|---|---|",
    ]
    chat = (results["direct"]["non-stream"], results["rainymodel"]["non-stream"])
    embed = (results["embeddings_direct"], results["embeddings_rainymodel"])
    for key, label in (("p50_ms", "latency p50, 1 client (ms)"), ("p99_ms", "latency p99, 1 client (ms)")):
        for endpoint, (d, r) in (("chat", chat), ("embeddings", embed)):
            lines.append(f"| {label} | {endpoint} | {fmt(d[key])} | {fmt(r[key])} | **{fmt(r[key] - d[key])}** |")
    for endpoint, (d, r) in (("chat", chat), ("embeddings", embed)):
        lines.append(
            f"| throughput, {args.clients} clients (req/s) | {endpoint} | {d['throughput_rps']:.0f} | "
            f"**{r['throughput_rps']:.0f}** | |"
        )
    errors = embed[1]["errors_1_client"] + embed[1]["errors_concurrent"]
    lines.append(f"\n- Failed embeddings requests through RainyModel: {errors}.")
    return "\n".join(lines) + "\n"


# --- report -------------------------------------------------------------------------------------------------------


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results: dict, args) -> str:
    direct, rm = results["direct"], results["rainymodel"]
    lite = results.get("litellm")
    lite_measured = lite if lite and "measured" not in lite else None
    header = "| measure | mode | fake upstream direct | RainyModel | added by RainyModel |"
    rule = "|---|---|---|---|---|"
    if lite:
        header += " LiteLLM | added by LiteLLM |"
        rule += "---|---|"
    lines = [
        f"Run {results['started']} on {results['machine']}; {args.requests} requests at 1 client after "
        f"{args.warmup} warmup, {args.clients} clients for {args.duration:g} s; fake answers {args.tokens} tokens.",
        "",
        header,
        rule,
    ]
    for mode in ("non-stream", "stream"):
        d, r = direct[mode], rm[mode]
        lt = lite_measured[mode] if lite_measured else None
        for key, label in (("p50_ms", "latency p50, 1 client (ms)"), ("p99_ms", "latency p99, 1 client (ms)")):
            row = f"| {label} | {mode} | {fmt(d[key])} | {fmt(r[key])} | **{fmt(r[key] - d[key])}** |"
            if lite:
                row += f" {fmt(lt[key])} | {fmt(lt[key] - d[key])} |" if lt else " not measured | |"
            lines.append(row)
        row = (
            f"| throughput, {args.clients} clients (req/s) | {mode} | {d['throughput_rps']:.0f} | "
            f"**{r['throughput_rps']:.0f}** | |"
        )
        if lite:
            row += f" {lt['throughput_rps']:.0f} | |" if lt else " not measured | |"
        lines.append(row)
    errors = sum(rm[m]["errors_1_client"] + rm[m]["errors_concurrent"] for m in ("non-stream", "stream"))
    lines += [
        "",
        f"- RainyModel worker resident memory after the run: **{results['rss_mb']:.1f} MB** "
        f"(peak {results['hwm_mb']:.1f} MB).",
        f"- Request log: {results['log_rows']} rows for {results['proxied_requests']} requests sent "
        f"({'none lost' if results['log_rows'] == results['proxied_requests'] else 'MISMATCH'}).",
        f"- Failed requests through RainyModel: {errors}.",
    ]
    if lite_measured:
        ratio = {
            m: rm[m]["throughput_rps"] / lite[m]["throughput_rps"] if lite[m]["throughput_rps"] else None
            for m in ("non-stream", "stream")
        }
        lite_errors = sum(lite[m]["errors_1_client"] + lite[m]["errors_concurrent"] for m in ("non-stream", "stream"))
        lines.append(f"- LiteLLM latency over {lite['non-stream']['requests_1_client']} requests per mode.")
        lines.append(
            f"- Throughput RainyModel / LiteLLM: non-stream {fmt(ratio['non-stream'], 1)}x, "
            f"stream {fmt(ratio['stream'], 1)}x. LiteLLM resident memory {lite['rss_mb']:.1f} MB; "
            f"failed requests through LiteLLM: {lite_errors}."
        )
    elif lite:
        lines.append(f"- LiteLLM: not measured ({lite['measured']}).")
    lines += responses_rows(results)
    return "\n".join(lines) + "\n"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on this PostgreSQL database (name must contain 'bench'; dropped and created afresh, dropped at the "
        "end) instead of SQLite; needs --redis-url (the production shape)",
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="shared state (limits, breakers, config version) in this Redis database, which the bench empties "
        "(FLUSHDB) first: give it a database number nothing else uses",
    )


def check_server_arguments(parser: argparse.ArgumentParser, args) -> None:
    if args.postgres and not args.redis_url:
        parser.error("--postgres needs --redis-url (the production shape: PostgreSQL and Redis together)")
    if getattr(args, "workers", None) and args.workers > 1 and not args.redis_url:
        parser.error("--workers N > 1 needs --redis-url: without it each worker keeps its own limits and breakers")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests at 1 client, per mode and target")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of concurrent load per measurement")
    parser.add_argument("--tokens", type=int, default=20, help="words in each fake answer (stream chunks)")
    parser.add_argument(
        "--embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure POST /v1/embeddings, direct and through RainyModel (default: yes)",
    )
    parser.add_argument("--with-litellm", action="store_true", help="also measure the LiteLLM proxy")
    parser.add_argument(
        "--litellm-requests",
        type=int,
        default=None,
        help="requests at 1 client for LiteLLM (default: --requests; it is much slower)",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="instead of the run above: throughput of the production command (gunicorn, gunicorn.conf.py) with 1 "
        "and with N workers, interleaved, plus the exact-limits and log-row checks (bench/scaling.py)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --workers: 1-worker/N-worker rounds")
    parser.add_argument("--limit", type=int, default=50, help="with --workers: the rpm and request quota checked")
    args = parser.parse_args(argv)
    check_server_arguments(parser, args)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-bench-"))
    secret = secrets.token_urlsafe(40)
    if args.workers is not None:
        from bench.scaling import run_scaling

        return run_scaling(args, workdir)
    database_url = bench_database(args, workdir)
    fake_port = free_port()
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "args": vars(args),
    }
    fake = start_fake_upstream(fake_port, args.tokens)
    server = litellm = None
    try:
        key = setup_database(database_url, secret, fake_port)
        server = bench_server(database_url, secret, args.redis_url).start()
        log(f"fake upstream on :{fake_port}, RainyModel on {server.url} (pid {server.pid}), database {database_url}")

        direct = Target("direct", fake_port, "/v1/chat/completions", "fake-model", None)
        rainymodel = Target("rainymodel", server.port, "/v1/chat/completions", ALIAS, key)
        problem = check_answers(rainymodel)
        if problem:
            log(problem)
            log("server log tail:\n" + server.log_text()[-2000:])
            return 2
        results["direct"] = measure(direct, args)
        results["rainymodel"] = measure(rainymodel, args)
        responses = ResponsesTarget("responses", server.port, "/v1/responses", ALIAS, key)
        problem = check_answers(responses)
        if problem:
            log(problem)
            return 2
        results["responses"] = measure(responses, args)
        messages = MessagesTarget("messages", server.port, "/v1/messages", ALIAS, key)
        completions = CompletionsTarget("completions", server.port, "/v1/completions", ALIAS, key)
        for target in (messages, completions):
            problem = check_answers(target)
            if problem:
                log(problem)
                return 2
        results["messages"] = measure(messages, args)
        results["completions_direct"] = measure(
            CompletionsTarget("completions-direct", fake_port, "/v1/completions", "fake-model", None), args
        )
        results["completions"] = measure(completions, args)
        embeddings = None
        if args.embeddings:
            embeddings = EmbeddingsTarget("rainymodel", server.port, "/v1/embeddings", ALIAS, key)
            results["embeddings_direct"] = measure_embeddings(
                EmbeddingsTarget("direct", fake_port, "/v1/embeddings", "fake-model", None), args
            )
            results["embeddings_rainymodel"] = measure_embeddings(embeddings, args)
        rss, hwm = server.rss_bytes(), rss_of(server.pid)[1]
        results["rss_mb"], results["hwm_mb"] = rss / 2**20, hwm / 2**20
        server.stop()
        results["proxied_requests"] = (
            rainymodel.sent + responses.sent + messages.sent + completions.sent + (embeddings.sent if embeddings else 0)
        )
        results["log_rows"] = count_log_rows()

        if args.with_litellm:
            exe, note = install_litellm()
            if exe is None:
                results["litellm"] = {"measured": note}
            else:
                litellm_port = free_port()
                litellm, note = start_litellm(exe, litellm_port, fake_port, workdir)
                if litellm is None:
                    results["litellm"] = {"measured": note}
                else:
                    target = Target("litellm", litellm_port, "/v1/chat/completions", ALIAS, "sk-bench-master")
                    problem = check_answers(target)
                    if problem:
                        results["litellm"] = {"measured": problem[:300]}
                    else:
                        results["litellm"] = measure(target, args, args.litellm_requests)
                        results["litellm"]["rss_mb"] = rss_of(litellm.pid)[0] / 2**20
            log(f"LiteLLM: {results['litellm'].get('measured', 'measured')}")
    finally:
        if server is not None:
            server.stop()
        if litellm is not None:
            litellm.terminate()
            try:
                litellm.wait(15)
            except subprocess.TimeoutExpired:
                litellm.kill()
        fake.terminate()
        fake.wait(5)

    results["metrics_cost"] = metrics_cost.measure()  # µs per request of recording the metrics, no server
    table = report(results, args) + report_embeddings(results, args) + metrics_cost.report(results["metrics_cost"])
    if args.postgres or args.redis_url:
        table = f"Database: {'PostgreSQL' if args.postgres else 'SQLite'}; shared state: Redis.\n\n" + table
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.md").write_text(table)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    if args.postgres:
        recreate_postgres(args.postgres, create=False)
    return 0 if results["log_rows"] == results["proxied_requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
