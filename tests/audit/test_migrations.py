"""The migrations adding the audit trail (routing 0004, apikeys 0005) give every object that already exists one
"created" row, so the first change made afterwards shows its diff; the baseline masks provider credentials and
holds no key HMAC, like every other row."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("routing", "0003_route_endpoints"), ("apikeys", "0004_merge_self_service_keys_and_user_limits")]
AFTER = [("routing", "0004_audit_history"), ("apikeys", "0005_audit_history")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def old_schema(transactional_db):
    apps = _migrate(BEFORE)
    yield apps
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_existing_objects_get_a_masked_baseline_row(old_schema):
    Provider = old_schema.get_model("routing", "Provider")
    APIKey = old_schema.get_model("apikeys", "APIKey")
    Provider.objects.create(
        name="p",
        kind="openai",
        tier="free",
        base_url="https://svc:pw-123456@p.test/v1",
        extra_headers={"X-Api-Key": "xk-secret-1", "X-Title": "t"},
    )
    APIKey.objects.create(name="old", prefix="rm-oldoldold", hashed_key="f" * 64)

    apps = _migrate(AFTER)
    provider_rows = list(apps.get_model("routing", "HistoricalProvider").objects.all())
    key_rows = list(apps.get_model("apikeys", "HistoricalAPIKey").objects.all())
    assert [(r.name, r.history_type, r.history_source) for r in provider_rows] == [("p", "+", "audit trail installed")]
    assert provider_rows[0].base_url == "https://svc:(hidden)@p.test/v1"
    assert provider_rows[0].extra_headers == {"X-Api-Key": "(hidden)", "X-Title": "t"}
    assert [(r.name, r.prefix, r.history_actor) for r in key_rows] == [("old", "rm-oldoldold", "migration")]
    assert not hasattr(key_rows[0], "hashed_key")
