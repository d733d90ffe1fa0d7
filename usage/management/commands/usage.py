"""`manage.py usage prune --older-than 90d` and `manage.py usage generate --rows N [--days D]`.

prune deletes old RequestLog rows in batches (short transactions, so the log writer is never held up) and keeps
the hourly rollups, so the usage pages still show totals for pruned periods. generate writes realistic synthetic
rows with their rollups, for demos and benchmarks.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

AGE = re.compile(r"^(\d+)([hdw])$")
UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_age(value: str) -> timedelta:
    match = AGE.match(value.strip())
    if not match or int(match.group(1)) <= 0:
        raise CommandError(f"--older-than must look like 90d, 12h or 2w; got {value!r}.")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Request-log maintenance: prune old rows (rollups are kept), generate synthetic rows."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune,generate}")
        prune = actions.add_parser("prune", help="delete RequestLog rows older than an age, keeping the rollups")
        prune.add_argument("--older-than", required=True, help="age such as 90d, 12h or 2w")
        prune.add_argument("--batch-size", type=int, default=5000)
        generate = actions.add_parser("generate", help="write realistic synthetic RequestLog rows and rollups")
        generate.add_argument("--rows", type=int, required=True)
        generate.add_argument("--days", type=int, default=30, help="spread the rows over this many past days")
        generate.add_argument("--keys", type=int, default=12,
                              help="demo keys to create when the database has none (default 12)")
        generate.add_argument("--batch-size", type=int, default=5000)
        generate.add_argument("--seed", type=int, default=None)

    def handle(self, *args, action, **options):
        if action == "prune":
            self.prune(parse_age(options["older_than"]), options["batch_size"])
        else:
            self.generate(**options)

    def prune(self, age: timedelta, batch_size: int) -> None:
        from usage.models import RequestLog

        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = timezone.now() - age
        deleted = 0
        while True:
            with transaction.atomic():
                ids = list(RequestLog.objects.filter(created_at__lt=cutoff).order_by()
                           .values_list("id", flat=True)[:batch_size])
                if not ids:
                    break
                deleted += RequestLog.objects.filter(id__in=ids).delete()[0]
        self.stdout.write(f"Deleted {deleted} request-log rows older than {cutoff:%Y-%m-%d %H:%M} UTC "
                          "(hourly rollups kept).")

    def generate(self, *, rows: int, days: int, keys: int, batch_size: int, seed, **_options) -> None:
        from tqdm import tqdm

        from apikeys.models import APIKey
        from usage.synthetic import Generator, configured_routes, write_rows

        if rows < 1 or days < 1 or batch_size < 1:
            raise CommandError("--rows, --days and --batch-size must be positive.")
        key_list = list(APIKey.objects.order_by("id").values_list("id", "prefix"))
        if not key_list and keys > 0:
            from apikeys.services import apikey_create

            for number in range(1, keys + 1):
                api_key, _ = apikey_create(name=f"demo-{number}")
                key_list.append((api_key.id, api_key.prefix))
            self.stdout.write(f"Created {keys} demo keys (demo-1 … demo-{keys}).")
        end = timezone.now()
        generator = Generator(keys=key_list, routes=configured_routes(), start=end - timedelta(days=days), end=end,
                              seed=seed)
        with tqdm(total=rows, unit="rows", unit_scale=True, disable=None) as progress:
            written = 0
            while written < rows:
                size = min(batch_size, rows - written)
                # Batches walk forward through time, each covering its share of the period.
                batch = generator.batch(size, (written / rows, (written + size) / rows))
                write_rows(batch)
                written += len(batch)
                progress.update(len(batch))
        self.stdout.write(f"Wrote {written} synthetic request-log rows over the last {days} days, with rollups.")
