"""`manage.py usage prune` keeps rollups while deleting old rows in batches; `usage generate` writes realistic
rows with their rollups."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from tests.usage.conftest import make_row, write
from usage.models import RequestLog, UsageHourly

pytestmark = pytest.mark.django_db


def test_prune_deletes_rows_older_than_the_age_in_batches_and_keeps_rollups(api_key):
    key, _ = api_key()
    now = timezone.now()
    old = [make_row(created_at=now - timedelta(days=91, minutes=i), api_key=key) for i in range(25)]
    recent = [make_row(created_at=now - timedelta(days=89), api_key=key) for _ in range(5)]
    write(old + recent)
    out = StringIO()
    call_command("usage", "prune", "--older-than", "90d", "--batch-size", "7", stdout=out)
    assert "Deleted 25 " in out.getvalue()
    assert set(RequestLog.objects.values_list("id", flat=True)) == {r["id"] for r in recent}
    assert UsageHourly.objects.aggregate(n=Sum("requests"))["n"] == 30


@pytest.mark.parametrize("age", ["90", "ninety days", "0d", "-5d"])
def test_prune_refuses_an_unreadable_age(age):
    with pytest.raises(CommandError, match="--older-than"):
        call_command("usage", "prune", "--older-than", age)


def test_generate_writes_the_rows_and_matching_rollups_over_the_given_days(premium_routes):
    out = StringIO()
    call_command("usage", "generate", "--rows", "3000", "--days", "5", "--seed", "1", "--batch-size", "700",
                 stdout=out)
    assert RequestLog.objects.count() == 3000
    assert UsageHourly.objects.aggregate(n=Sum("requests"))["n"] == 3000
    oldest = RequestLog.objects.order_by("created_at").first().created_at
    assert oldest >= timezone.now() - timedelta(days=5, minutes=1)
    # Realistic: several keys (demo keys were created), all three tiers, some errors and fallbacks, costs only
    # where a premium route answered.
    assert "Created 12 demo keys" in out.getvalue()
    assert RequestLog.objects.values("api_key_id").distinct().count() > 5
    assert set(RequestLog.objects.values_list("tier", flat=True)) >= {"free", "internal", "premium"}
    assert 0 < RequestLog.objects.filter(status__gte=400).count() < 600
    assert RequestLog.objects.filter(fallback=True).exists()
    assert not RequestLog.objects.filter(tier="free", cost_usd__gt=0).exists()
    assert RequestLog.objects.filter(tier="premium", cost_usd__gt=0).exists()
    log_tokens = RequestLog.objects.aggregate(n=Sum("completion_tokens"))["n"]
    assert UsageHourly.objects.aggregate(n=Sum("completion_tokens"))["n"] == log_tokens


def test_generate_refuses_non_positive_counts():
    with pytest.raises(CommandError):
        call_command("usage", "generate", "--rows", "0")
