"""`manage.py usage prune --older-than 90d`, `manage.py usage generate --rows N [--days D]` and
`manage.py usage remove-generated`.

prune deletes old RequestLog rows in batches (short transactions, so the log writer is never held up) and keeps
the hourly rollups, so the usage pages still show totals for pruned periods. generate writes realistic synthetic
rows with their rollups, for demos and benchmarks: only on keys of its own (named `demo-…`), every row marked
`synthetic`, and it refuses a database that holds real keys or traffic unless `--force`. remove-generated takes
all of that back out: the synthetic rows, their share of the rollups, and the demo keys.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from apikeys.models import APIKey
from apikeys.services import apikey_create
from usage.models import RequestLog, UsageDaily, UsageHourly
from usage.rollups import add_to_rollups
from usage.synthetic import Generator, configured_routes, write_rows

AGE = re.compile(r"^(\d+)([hdw])$")
UNITS = {"h": "hours", "d": "days", "w": "weeks"}
DEMO_PREFIX = "demo-"  # the names of the keys `generate` makes; nothing else may write synthetic rows to a key


def parse_age(value: str) -> timedelta:
    match = AGE.match(value.strip())
    if not match or int(match.group(1)) <= 0:
        raise CommandError(f"--older-than must look like 90d, 12h or 2w; got {value!r}.")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Request-log maintenance: prune old rows (rollups are kept), generate synthetic rows for demos and "
        "benchmarks, remove them again."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune,generate,remove-generated}")
        prune = actions.add_parser("prune", help="delete RequestLog rows older than an age, keeping the rollups")
        prune.add_argument("--older-than", required=True, help="age such as 90d, 12h or 2w")
        prune.add_argument("--batch-size", type=int, default=5000)
        generate = actions.add_parser("generate", help="write realistic synthetic RequestLog rows and rollups")
        generate.add_argument("--rows", type=int, required=True)
        generate.add_argument("--days", type=int, default=30, help="spread the rows over this many past days")
        generate.add_argument(
            "--keys", type=int, default=12, help=f"demo keys ({DEMO_PREFIX}1 …) to spread the traffic over (default 12)"
        )
        generate.add_argument("--batch-size", type=int, default=5000)
        generate.add_argument("--seed", type=int, default=None)
        generate.add_argument(
            "--force",
            action="store_true",
            help="write even though the database holds real keys or traffic (rows still go "
            "only to demo keys, marked synthetic)",
        )
        remove = actions.add_parser(
            "remove-generated", help="delete the synthetic rows, their share of the rollups, and the demo keys"
        )
        remove.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, action, **options):
        if action == "prune":
            self.prune(parse_age(options["older_than"]), options["batch_size"])
        elif action == "generate":
            self.generate(**options)
        else:
            self.remove_generated(options["batch_size"])

    def prune(self, age: timedelta, batch_size: int) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = timezone.now() - age
        deleted = 0
        while True:
            with transaction.atomic():
                ids = list(
                    RequestLog.objects.filter(created_at__lt=cutoff)
                    .order_by()
                    .values_list("id", flat=True)[:batch_size]
                )
                if not ids:
                    break
                deleted += RequestLog.objects.filter(id__in=ids).delete()[0]
        self.stdout.write(
            f"Deleted {deleted} request-log rows older than {cutoff:%Y-%m-%d %H:%M} UTC (hourly rollups kept)."
        )

    def generate(self, *, rows: int, days: int, keys: int, batch_size: int, seed, force: bool, **_options) -> None:
        if rows < 1 or days < 1 or batch_size < 1 or keys < 1:
            raise CommandError("--rows, --days, --keys and --batch-size must be positive.")
        real_keys = APIKey.objects.exclude(name__startswith=DEMO_PREFIX).count()
        real_rows = RequestLog.objects.filter(synthetic=False).exists()
        if (real_keys or real_rows) and not force:
            found = " and ".join(
                what
                for what, present in ((f"{real_keys} real API key(s)", real_keys), ("real request-log rows", real_rows))
                if present
            )
            raise CommandError(
                f"This database holds {found}. `usage generate` writes synthetic traffic for demos and benchmarks; "
                "run it on a database of its own, or pass --force to add synthetic rows anyway (they go to demo "
                "keys only, are marked synthetic, and `usage remove-generated` takes them out again)."
            )
        end = timezone.now()
        start = end - timedelta(days=days)
        key_list = self._demo_keys(keys, start)
        generator = Generator(keys=key_list, routes=configured_routes(), start=start, end=end, seed=seed)
        with tqdm(total=rows, unit="rows", unit_scale=True, disable=None) as progress:
            written = 0
            while written < rows:
                size = min(batch_size, rows - written)
                # Batches walk forward through time, each covering its share of the period.
                batch = generator.batch(size, (written / rows, (written + size) / rows))
                write_rows(batch)
                written += len(batch)
                progress.update(len(batch))
        self.stdout.write(
            f"Wrote {written} synthetic request-log rows over the last {days} days, with rollups, "
            f"on demo keys {DEMO_PREFIX}1 … {DEMO_PREFIX}{keys}. Remove them with "
            "`manage.py usage remove-generated`."
        )

    def _demo_keys(self, count: int, start) -> list[tuple[int, str]]:
        """Keys `demo-1` … `demo-<count>` (made when missing), dated back to `start` so no row predates its key."""
        existing = {
            k.name: k
            for k in APIKey.objects.filter(name__startswith=DEMO_PREFIX, revoked_at__isnull=True, owner__isnull=True)
        }
        created = 0
        keys = []
        for number in range(1, count + 1):
            api_key = existing.get(f"{DEMO_PREFIX}{number}")
            if api_key is None:
                api_key, _ = apikey_create(name=f"{DEMO_PREFIX}{number}")
                created += 1
            keys.append(api_key)
        APIKey.objects.filter(pk__in=[k.pk for k in keys], created_at__gt=start).update(created_at=start)
        if created:
            self.stdout.write(f"Created {created} demo keys ({DEMO_PREFIX}1 … {DEMO_PREFIX}{count}).")
        return [(k.id, k.prefix) for k in keys]

    def remove_generated(self, batch_size: int) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        columns = [
            "id",
            "created_at",
            "api_key_id",
            "key_prefix",
            "alias",
            "policy",
            "tier",
            "provider",
            "upstream_model",
            "status",
            "admitted",
            "fallback",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "latency_ms",
            "ttft_ms",
        ]
        removed = 0
        while True:
            # One short transaction per batch: the rows and their share of the rollups go together.
            with transaction.atomic():
                rows = list(RequestLog.objects.filter(synthetic=True).order_by().values(*columns)[:batch_size])
                if not rows:
                    break
                add_to_rollups(rows, sign=-1)
                removed += RequestLog.objects.filter(id__in=[r["id"] for r in rows]).delete()[0]
        demo = APIKey.objects.filter(name__startswith=DEMO_PREFIX)
        # A demo key somebody used for real calls keeps its key and its rows.
        used = set(RequestLog.objects.filter(api_key__in=demo).values_list("api_key_id", flat=True).distinct())
        doomed = list(demo.exclude(pk__in=used).values_list("pk", flat=True))
        with transaction.atomic():
            # Synthetic rows already pruned from the log still sit in the rollups: those of demo keys go with them.
            for model in (UsageHourly, UsageDaily):
                model.objects.filter(api_key_id__in=doomed).delete()
                model.objects.filter(requests__lte=0).delete()
            keys_deleted = APIKey.objects.filter(pk__in=doomed).delete()[1].get("apikeys.APIKey", 0)
        self.stdout.write(
            f"Removed {removed} synthetic request-log rows (and their share of the rollups) and "
            f"{keys_deleted} demo keys." + (f" Kept {len(used)} demo keys that have real traffic." if used else "")
        )
