"""`manage.py responses prune`: delete stored responses past their expiry (RAINYMODEL_RESPONSES_TTL_S)."""

from django.core.management.base import BaseCommand

from responses_store.store import prune_sync


class Command(BaseCommand):
    help = "Stored Responses API responses: prune the expired ones."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune}")
        actions.add_parser("prune", help="delete stored responses whose time (RAINYMODEL_RESPONSES_TTL_S) is up")

    def handle(self, *args, **options):
        deleted = prune_sync()
        self.stdout.write(f"Deleted {deleted} expired stored responses.")
