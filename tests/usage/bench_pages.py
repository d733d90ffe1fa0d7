"""Time every usage page against a large database (not a test: run by hand, see docs/usage.md).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rm_usage_bench SECRET_KEY=bench-secret \
        .venv/bin/python -m tests.usage.bench_pages [--repeat 7]

Uses Django's test client in-process (full middleware, view, queries and template rendering; no network), as a
staff user and as a plain user who owns one key (every page, as each), and prints the median and worst warm time
per page. The CSV exports are timed through a real server by tests/usage/bench_csv.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from apikeys.keys import generate_key, hash_key, key_prefix
    from apikeys.models import APIKey
    from routing import snapshot
    from usage.models import RequestLog, UsageHourly

    settings.ALLOWED_HOSTS = ["*"]
    staff, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    plain, _ = User.objects.get_or_create(username="bench-user")
    from django.db.models import Sum

    from usage.models import UsageDaily

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
    # Give the busiest key a secret this script knows, so /v1/usage can be called as that key.
    full_key = generate_key()
    APIKey.objects.filter(pk=busiest).update(prefix=key_prefix(full_key), hashed_key=hash_key(full_key))
    snapshot.refresh()
    print(
        f"RequestLog rows: {RequestLog.objects.count():,}; UsageHourly rows: {UsageHourly.objects.count():,}; "
        f"plain user owns the busiest key, {busiest}"
    )

    pages = [
        ("staff", "/usage/?period=24h"),
        ("staff", "/usage/?period=7d"),
        ("staff", "/usage/?period=30d"),
        ("staff", "/usage/?period=30d&tier=premium&errors=1"),
        ("staff", "/usage/breakdown/?by=alias&period=30d"),
        ("staff", "/usage/breakdown/?by=provider&period=30d"),
        ("staff", "/usage/breakdown/?by=key&period=30d"),
        ("staff", "/usage/breakdown/?by=policy&period=30d"),
        ("staff", "/usage/breakdown/?by=tier&period=30d"),
        ("staff", "/usage/keys/?period=30d"),
        ("staff", f"/usage/keys/{busiest}/?period=30d"),
        ("staff", "/usage/log/?period=30d"),
        ("staff", "/usage/log/?period=30d&errors=1"),
        ("staff", "/usage/log/?period=30d&provider=openrouter&status=429"),
        ("staff", f"/usage/log/?period=30d&key={busiest}"),
    ]
    # Every page again as the plain user, who sees only the key they own.
    pages += [("plain", url) for who, url in list(pages) if who == "staff"]
    clients = {"staff": Client(), "plain": Client()}
    clients["staff"].force_login(staff)
    clients["plain"].force_login(plain)
    worst_overall = 0.0
    print(f"{'who':6} {'page':62} {'median ms':>10} {'max ms':>8}")
    for who, url in pages:
        timings = []
        for attempt in range(args.repeat + 1):
            started = time.perf_counter()
            response = clients[who].get(url)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, (url, response.status_code)
            if attempt:  # the first call warms caches and connections
                timings.append(elapsed)
        worst_overall = max(worst_overall, max(timings))
        print(f"{who:6} {url:62} {statistics.median(timings):10.1f} {max(timings):8.1f}")
    api = Client()
    for query in ("period=30d", "period=30d&group_by=day", "period=30d&group_by=alias"):
        timings = []
        for attempt in range(args.repeat + 1):
            started = time.perf_counter()
            response = api.get(f"/v1/usage?{query}", headers={"Authorization": f"Bearer {full_key}"})
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200
            if attempt:
                timings.append(elapsed)
        worst_overall = max(worst_overall, max(timings))
        print(f"{'key':6} {'/v1/usage?' + query:62} {statistics.median(timings):10.1f} {max(timings):8.1f}")
    print(f"worst single page: {worst_overall:.1f} ms")
    sys.exit(0)


if __name__ == "__main__":
    main()
