"""`manage.py routing export | import FILE [--replace] | load-defaults` (SPEC §4, §9)."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from routing.models import Alias, Policy, Provider

from .conftest import DEFAULTS_FILE

ROOT = Path(__file__).resolve().parents[2]


def run(*args) -> str:
    out = StringIO()
    call_command("routing", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_load_defaults_fills_an_empty_database(db):
    output = run("load-defaults")
    assert "Loaded the default routing configuration" in output
    assert "providers: 4 created" in output
    assert Provider.objects.count() == 4 and Alias.objects.count() == 5 and Policy.objects.count() == 4


def test_load_defaults_leaves_an_existing_configuration_alone(db):
    run("load-defaults")
    hf = Provider.objects.get(name="hf")
    hf.enabled = False
    hf.save()
    output = run("load-defaults")
    assert "already present (4 providers, 5 aliases, 4 policies); defaults not loaded" in output
    assert Provider.objects.get(name="hf").enabled is False


def test_load_defaults_skips_when_only_policies_exist(db):
    Policy.objects.create(name="mine", tiers=["free"], is_default=True)
    assert "defaults not loaded" in run("load-defaults")
    assert not Provider.objects.exists()


def test_export_then_import_replace_round_trips(db, tmp_path):
    run("import", str(DEFAULTS_FILE))
    exported = run("export")
    path = tmp_path / "routing.yaml"
    path.write_text(exported)
    assert "(--replace)" in run("import", str(path), "--replace")
    assert run("export") == exported


def test_export_to_a_file(db, tmp_path):
    run("load-defaults")
    path = tmp_path / "out.yaml"
    run("export", "--output", str(path))
    assert path.read_text() == run("export")


def test_import_refusal_is_a_command_error_naming_the_problem(db, yaml_file):
    run("load-defaults")
    path = yaml_file("""
        aliases:
          - name: rainymodel/auto
            routes: [{provider: nope, upstream_model: m}]
    """)
    with pytest.raises(
        CommandError,
        match=r"nothing was changed: aliases\[0\] \(rainymodel/auto\) routes\[0\]: "
        r"provider 'nope' is not defined",
    ):
        run("import", path)
    assert Alias.objects.get(name="rainymodel/auto").routes.count() == 5


def test_import_from_standard_input(db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", StringIO("policies: [{name: solo, tiers: [free], is_default: true}]"))
    run("import", "-")
    assert Policy.objects.get().name == "solo"


def test_a_bad_file_exits_1_with_the_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "SECRET_KEY": "test-only-secret",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "routing", "import", str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not valid YAML at line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_action_is_a_usage_error(db):
    with pytest.raises(CommandError):
        call_command("routing")


def test_an_unknown_endpoint_is_refused_by_the_command(db, tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(
        "providers: [{name: hf, kind: hf, tier: free, base_url: 'http://h/v1'}]\n"
        "aliases: [{name: a, routes: [{provider: hf, upstream_model: m, endpoints: [embedings]}]}]\n"
    )
    with pytest.raises(CommandError) as caught:
        run("import", str(path))
    assert "aliases[0] (a) routes[0] endpoints: Unknown endpoint(s) ['embedings']" in str(caught.value)
    assert not Alias.objects.exists()
