"""Fixtures for the routing tests: a YAML file on disk, and a fingerprint of everything an import may change."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "routing" / "defaults.yaml"


@pytest.fixture
def yaml_file(tmp_path):
    """`yaml_file(text)` writes dedented YAML to a temporary file and returns its path as a string."""
    counter = iter(range(1_000_000))

    def write(text: str) -> str:
        path = tmp_path / f"routing-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def db_fingerprint(db):
    """`db_fingerprint()`: every routing row with its id, so 'unchanged' really means unchanged."""
    from routing.models import Alias, Policy, Provider, Route, RoutingSettings

    def take():
        return (
            [tuple(row.items()) for row in Provider.objects.order_by("id").values()],
            [tuple(row.items()) for row in Alias.objects.order_by("id").values()],
            [tuple(row.items()) for row in Route.objects.order_by("id").values()],
            [tuple(sorted(row.items())) for row in Policy.objects.order_by("id").values()],
            list(RoutingSettings.objects.values_list("catch_all_alias_id", flat=True)),
        )

    return take


@pytest.fixture
def defaults_loaded(db):
    """The database holding routing/defaults.yaml, as `make run` loads it."""
    from routing.config_file import import_file

    return import_file(str(DEFAULTS_FILE))
