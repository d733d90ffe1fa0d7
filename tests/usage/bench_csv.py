"""Time the CSV exports through a real server (not a test: run by hand, see docs/usage.md).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rm_usage_bench SECRET_KEY=bench-secret \
        .venv/bin/python -m tests.usage.bench_csv [--period 30d]

Starts one uvicorn worker on the database (as production serves the ASGI application), signs in a staff user and
a plain user who owns the busiest key (sessions made with Django's test client, sent as cookies), downloads each
export over a socket with httpx, and prints the time to the first byte, the total time, the size, and the
worker's resident memory before, at its peak during the download (sampled every 50 ms) and after.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

import httpx


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def download(url: str, cookies: dict, pid: int) -> dict:
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    before = rss_mb(pid)
    sampler.start()
    started = time.perf_counter()
    first = first_row = None
    size = 0
    lines = 0
    with httpx.stream("GET", url, cookies=cookies, timeout=600) as response:
        assert response.status_code == 200, response.status_code
        for chunk in response.iter_bytes():
            if first is None and chunk:
                first = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
            if first_row is None and lines >= 2:
                first_row = time.perf_counter() - started
    total = time.perf_counter() - started
    done.set()
    sampler.join()
    time.sleep(1.0)
    return {
        "first_byte_s": first,
        "first_row_s": first_row,
        "total_s": total,
        "mb": size / 1e6,
        "rows": lines - 1,
        "rss_before": before,
        "rss_peak": peak[0],
        "rss_after": rss_mb(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--period", default="30d")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db.models import Sum
    from django.test import Client

    from apikeys.models import APIKey
    from usage.models import UsageDaily

    staff, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    plain, _ = User.objects.get_or_create(username="bench-user")
    busiest = (
        UsageDaily.objects.exclude(api_key_id=0)
        .values("api_key_id")
        .annotate(n=Sum("requests"))
        .order_by("-n")
        .values_list("api_key_id", flat=True)
        .first()
    )
    assert busiest is not None, "no usage rows: generate some first"
    APIKey.objects.filter(pk=busiest).update(owner=plain)
    cookies = {}
    for who, user in (("staff", staff), ("plain", plain)):
        client = Client()
        client.force_login(user)
        cookies[who] = {"sessionid": client.cookies["sessionid"].value}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "rainymodel_site.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "ALLOWED_HOSTS": "127.0.0.1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        httpx.get(base + "/usage/?period=24h", cookies=cookies["staff"], timeout=60)  # warm up
        print(
            f"{'who':6} {'export':52} {'first byte s':>12} {'first row s':>11} {'total s':>8} {'MB':>7} "
            f"{'rows':>9} "
            f"{'RSS before':>10} {'peak':>6} {'after':>6}"
        )
        for who, path in (
            ("staff", f"/usage/log.csv?period={args.period}"),
            ("plain", f"/usage/log.csv?period={args.period}"),
            ("staff", f"/usage/breakdown/?by=provider&period={args.period}&format=csv"),
            ("plain", f"/usage/breakdown/?by=alias&period={args.period}&format=csv"),
        ):
            r = download(base + path, cookies[who], server.pid)
            print(
                f"{who:6} {path:52} {r['first_byte_s']:12.3f} {r['first_row_s'] or 0:11.3f} {r['total_s']:8.1f} "
                f"{r['mb']:7.1f} {r['rows']:9,} "
                f"{r['rss_before']:10.0f} {r['rss_peak']:6.0f} {r['rss_after']:6.0f}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
