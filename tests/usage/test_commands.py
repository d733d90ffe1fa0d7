"""`manage.py usage prune` keeps rollups while deleting old rows in batches; `usage generate` writes realistic
rows with their rollups, only onto demo keys and only where it cannot be mistaken for real traffic;
`usage remove-generated` takes them back out."""

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
    call_command("usage", "generate", "--rows", "3000", "--days", "5", "--seed", "1", "--batch-size", "700", stdout=out)
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


def _rollup_sums():
    from usage.models import ROLLUP_MEASURES, UsageDaily

    return [model.objects.aggregate(**{m: Sum(m) for m in ROLLUP_MEASURES}) for model in (UsageHourly, UsageDaily)]


def test_generate_refuses_a_database_with_real_keys_or_traffic_unless_forced(api_key, premium_routes):
    real, _ = api_key(name="alice-laptop")
    with pytest.raises(CommandError, match="--force"):
        call_command("usage", "generate", "--rows", "10")
    assert not RequestLog.objects.exists()
    api_key_less = [make_row(created_at=timezone.now())]  # real traffic without any real key
    real.delete()
    write(api_key_less)
    with pytest.raises(CommandError, match="real request-log rows"):
        call_command("usage", "generate", "--rows", "10")


def test_forced_generate_writes_only_marked_rows_on_its_own_demo_keys_and_remove_takes_them_back(
    api_key, premium_routes
):
    from apikeys.models import APIKey

    real, _ = api_key(name="alice-laptop", quotas=[("day", "max_requests", 5)])
    revoked, _ = api_key(name="old")
    revoked.revoked_at = timezone.now()
    revoked.save()
    write([make_row(created_at=timezone.now() - timedelta(hours=1), api_key=real) for _ in range(4)])
    before = _rollup_sums()

    out = StringIO()
    call_command(
        "usage", "generate", "--rows", "2000", "--days", "3", "--keys", "4", "--seed", "3", "--force", stdout=out
    )
    demo = {k.id: k for k in APIKey.objects.filter(name__startswith="demo-")}
    assert sorted(k.name for k in demo.values()) == ["demo-1", "demo-2", "demo-3", "demo-4"]
    synthetic = RequestLog.objects.filter(synthetic=True)
    assert synthetic.count() == 2000 and RequestLog.objects.filter(synthetic=False).count() == 4
    assert set(synthetic.exclude(api_key_id=None).values_list("api_key_id", flat=True)) <= set(demo)
    for row in synthetic.exclude(api_key_id=None).only("created_at", "api_key_id").iterator():
        assert row.created_at >= demo[row.api_key_id].created_at  # never before the key existed
    # Refused rows are not admitted, as live.
    assert not synthetic.filter(error_code="rate_limit_exceeded", admitted=True).exists()
    assert "remove-generated" in out.getvalue()

    out = StringIO()
    call_command("usage", "remove-generated", "--batch-size", "300", stdout=out)
    assert "Removed 2000 synthetic request-log rows" in out.getvalue()
    assert RequestLog.objects.count() == 4 and not RequestLog.objects.filter(synthetic=True).exists()
    assert not APIKey.objects.filter(name__startswith="demo-").exists()
    assert set(APIKey.objects.values_list("name", flat=True)) == {"alice-laptop", "old"}
    assert _rollup_sums() == before  # the rollups hold exactly the real traffic again
    assert not UsageHourly.objects.filter(requests__lte=0).exists()
