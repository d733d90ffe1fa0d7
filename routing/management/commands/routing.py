"""`python manage.py routing export | import FILE [--replace] | load-defaults` (SPEC §4, §9).

A thin door onto routing.config_file: every refusal becomes a CommandError carrying the file's problems (exit
code 1, no traceback), and the database is left unchanged. Every change an import makes is recorded in the audit
trail as made by `routing import` (or `routing load-defaults`) and by `--actor` or the OS user (audit/history.py).
"""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.history import acting_as_command, add_actor_argument
from routing import config_file
from routing.models import Alias, Policy, Provider

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "defaults.yaml"


class Command(BaseCommand):
    help = "Export or import the routing configuration (providers, aliases with routes, policies) as YAML."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{export,import,load-defaults}")
        export = actions.add_parser("export", help="Print the routing configuration as YAML.")
        export.add_argument("-o", "--output", metavar="FILE", help="Write to FILE instead of standard output.")
        load = actions.add_parser("import", help="Load a YAML file, all or nothing.")
        load.add_argument("file", metavar="FILE", help='The YAML file ("-" reads standard input).')
        load.add_argument(
            "--replace", action="store_true", help="Also remove providers, aliases and policies the file does not name."
        )
        add_actor_argument(load)
        defaults = actions.add_parser(
            "load-defaults", help="Load routing/defaults.yaml, only into a database with no routing configuration."
        )
        add_actor_argument(defaults)

    def handle(self, *args, action, **options):
        try:
            if action == "export":
                self.export(options.get("output"))
            elif action == "import":
                reason = f"{options['file']}{' --replace' if options['replace'] else ''}"
                with acting_as_command("routing import", options.get("actor"), reason=reason):
                    self.load(options["file"], replace=options["replace"])
            else:
                with acting_as_command("routing load-defaults", options.get("actor"), reason="routing/defaults.yaml"):
                    self.load_defaults()
        except config_file.ConfigError as exc:
            raise CommandError(f"routing configuration refused, nothing was changed: {exc}") from None

    def export(self, output):
        text = config_file.export_config()
        if output:
            try:
                Path(output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
            self.stderr.write(f"Wrote the routing configuration to {output}.")
        else:
            self.stdout.write(text, ending="")

    def load(self, path, *, replace):
        if path == "-":
            summary = config_file.import_config(sys.stdin.read(), replace=replace)
        else:
            summary = config_file.import_file(path, replace=replace)
        self.stdout.write(f"Imported {path}{' (--replace)' if replace else ''}:\n{summary}")

    def load_defaults(self):
        counts = {
            "providers": Provider.objects.count(),
            "aliases": Alias.objects.count(),
            "policies": Policy.objects.count(),
        }
        if any(counts.values()):
            present = ", ".join(f"{n} {kind}" for kind, n in counts.items())
            self.stdout.write(f"Routing configuration already present ({present}); defaults not loaded.")
            return
        summary = config_file.import_file(str(DEFAULTS_FILE))
        self.stdout.write(f"Loaded the default routing configuration from routing/defaults.yaml:\n{summary}")
