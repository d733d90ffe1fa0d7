"""apikeys.UserLimits / UserQuota (issue 14): `manage.py apikey user-limits`, and the snapshot handing each of the
user's keys the user's limits (so the request path reads no database)."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apikeys.models import APIKey, UserLimits
from routing.config_version import read_version
from routing.snapshot import build_snapshot


def apikey(*args) -> str:
    out = StringIO()
    call_command("apikey", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def ada(db):
    return get_user_model().objects.create_user("ada")


def test_user_limits_sets_and_prints_what_is_in_force(ada):
    assert "Limits of user 'ada' (shared by all their keys): none" in apikey("user-limits", "ada")
    output = apikey(
        "user-limits", "ada", "--rpm", "60", "--max-concurrent", "3", "--quota", "requests:1000/day",
        "--quota", "cost:5.50/month",
    )  # fmt: skip
    assert output.strip().endswith("rpm=60 concurrent=3 requests=1000/day cost=5.5/month")
    output = apikey("user-limits", "ada", "--tpm", "9000", "--quota", "tokens:50000/day")
    assert output.strip().endswith("rpm=60 tpm=9000 concurrent=3 requests=1000/day tokens=50000/day cost=5.5/month")
    assert apikey("user-limits", "ada", "--clear").strip().endswith(": none")
    assert not UserLimits.objects.exists()
    assert apikey("user-limits", "ada", "--clear", "--rpm", "5").strip().endswith(": rpm=5")


@pytest.mark.parametrize(
    "args, words",
    [
        (["nobody"], "no user 'nobody'"),
        (["ada", "--rpm", "0"], "--rpm must be a whole number above 0"),
        (["ada", "--tpm", "lots"], "--tpm must be a whole number above 0"),
        (["ada", "--quota", "requests:10/week"], "period must be day or month"),
    ],
)
def test_user_limits_refuses_bad_arguments_and_writes_nothing(ada, args, words):
    with pytest.raises(CommandError, match=words):
        apikey("user-limits", *args)
    assert not UserLimits.objects.exists()


def test_the_snapshot_gives_every_key_of_the_user_the_users_limits(ada, django_capture_on_commit_callbacks):
    other = get_user_model().objects.create_user("bob")
    APIKey.objects.create(name="one", owner=ada, prefix="rm-adaone000")
    APIKey.objects.create(name="two", owner=ada, prefix="rm-adatwo000")
    APIKey.objects.create(name="bob", owner=other, prefix="rm-bob000000")
    APIKey.objects.create(name="none", prefix="rm-noowner00")
    before = read_version()
    with django_capture_on_commit_callbacks(execute=True):
        apikey("user-limits", "ada", "--rpm", "7", "--quota", "tokens:100/day")
    assert read_version() != before  # every worker rebuilds its snapshot
    keys = build_snapshot(0).keys_by_prefix
    for prefix in ("rm-adaone000", "rm-adatwo000"):
        owner = keys[prefix].owner_limits
        assert owner is not None and (owner.user_id, owner.username, owner.rpm_limit) == (ada.id, "ada", 7)
        assert [(q.period, q.max_tokens) for q in owner.quotas] == [("day", 100)]
        assert keys[prefix].has_limits
    assert keys["rm-bob000000"].owner_limits is None and not keys["rm-bob000000"].has_limits
    assert keys["rm-noowner00"].owner_limits is None


# --- the keys page shows the signed-in user's own limits and this period's use of them --------------------------

from tests.usage.conftest import premium_routes, traffic, users  # noqa: E402,F401


def test_the_keys_page_shows_the_users_totals_against_the_users_limits(client, traffic):
    from datetime import UTC, datetime

    from apikeys.models import UserQuota

    limits = UserLimits.objects.create(user=traffic.alice, rpm_limit=30, max_concurrent=2)
    UserQuota.objects.create(user_limits=limits, period="day", max_requests=100_000, max_tokens=10)
    client.force_login(traffic.alice)
    body = client.get("/usage/keys/").content.decode()
    assert 'id="user-limits"' in body and "30 requests/min" in body and "2 at a time" in body
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    alices = {k.id for k in traffic.alice_keys}
    mine = [r for r in traffic.rows if r["api_key_id"] in alices and r["created_at"] >= today and r["admitted"]]
    assert mine, "the traffic fixture should hold some of alice's rows today"
    assert f"{len(mine):,} of 100,000" in body  # both of alice's keys, and only hers
    assert "limit reached" in body  # 10 tokens a day: used up
    client.force_login(traffic.bob)  # bob has no user limits: no block
    assert 'id="user-limits"' not in client.get("/usage/keys/").content.decode()
