"""`manage.py apikey create | list | revoke` (SPEC §9)."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from apikeys.auth import authenticate
from apikeys.models import APIKey
from routing.models import Alias, Policy
from routing.snapshot import build_snapshot

KEY = re.compile(r"^rm-[A-Za-z0-9_-]{32,}$", re.MULTILINE)


def apikey(*args) -> str:
    out = StringIO()
    call_command("apikey", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def routing_names(db):
    Alias.objects.create(name="rainymodel/chat")
    Alias.objects.create(name="rainymodel/code")
    Policy.objects.create(name="auto", tiers=["free", "internal", "premium"], is_default=True)
    Policy.objects.create(name="free", tiers=["free", "internal"])


def test_create_prints_the_key_once_and_it_works(db):
    output = apikey("create", "--name", "laptop")
    keys = KEY.findall(output)
    assert len(keys) == 1 and output.count(keys[0]) == 1
    api_key = APIKey.objects.get()
    assert f"prefix {api_key.prefix}" in output
    assert authenticate(build_snapshot(0), {"authorization": f"Bearer {keys[0]}"}).id == api_key.id


def test_create_stores_every_option(routing_names):
    user = get_user_model().objects.create_user("ada")
    apikey(
        "create",
        "--name",
        "ci",
        "--user",
        "ada",
        "--rpm",
        "60",
        "--tpm",
        "100000",
        "--max-concurrent",
        "4",
        "--aliases",
        "rainymodel/chat, rainymodel/code",
        "--policies",
        "free,auto",
        "--default-policy",
        "free",
        "--expires",
        "2099-01-01T12:00:00+02:00",
        "--quota",
        "requests:1000/day",
        "--quota",
        "tokens:2000000/month",
        "--quota",
        "cost:5/month",
    )
    key = APIKey.objects.get()
    assert (key.name, key.owner, key.rpm_limit, key.tpm_limit, key.max_concurrent) == ("ci", user, 60, 100000, 4)
    assert key.allowed_aliases == ["rainymodel/chat", "rainymodel/code"]
    assert key.allowed_policies == ["free", "auto"]
    assert key.default_policy.name == "free"
    assert key.expires_at.isoformat() == "2099-01-01T10:00:00+00:00"
    quotas = {q.period: (q.max_requests, q.max_tokens, q.max_cost_usd) for q in key.quotas.all()}
    assert quotas == {"day": (1000, None, None), "month": (None, 2_000_000, Decimal("5"))}


def test_missing_user_error_points_at_create_user_not_createsuperuser(db):
    with pytest.raises(CommandError) as caught:
        apikey("create", "--name", "x", "--user", "bob")
    assert "--create-user" in str(caught.value) and "createsuperuser" not in str(caught.value)


def test_create_user_makes_a_plain_owner_without_password(db):
    output = apikey("create", "--name", "bob-laptop", "--user", "bob", "--create-user")
    bob = get_user_model().objects.get(username="bob")
    assert not bob.is_staff and not bob.is_superuser and not bob.has_usable_password()
    assert APIKey.objects.get().owner == bob
    assert "Created user 'bob'" in output and len(KEY.findall(output)) == 1


def test_create_user_uses_an_existing_user(db):
    ada = get_user_model().objects.create_user("ada", password="pw")
    output = apikey("create", "--name", "x", "--user", "ada", "--create-user")
    assert APIKey.objects.get().owner == ada and "Created user" not in output
    assert get_user_model().objects.count() == 1 and get_user_model().objects.get().check_password("pw")


def test_create_user_is_rolled_back_when_the_key_is_refused(routing_names):
    with pytest.raises(CommandError, match="allowed_policies"):
        apikey("create", "--name", "x", "--user", "bob", "--create-user", "--policies", "cheap")
    assert not get_user_model().objects.filter(username="bob").exists() and not APIKey.objects.exists()


def test_create_user_without_user_is_refused(db):
    with pytest.raises(CommandError, match="--create-user needs --user"):
        apikey("create", "--name", "x", "--create-user")


def test_an_expiry_without_zone_is_utc(db):
    apikey("create", "--name", "x", "--expires", "2099-06-30")
    assert APIKey.objects.get().expires_at.isoformat() == "2099-06-30T00:00:00+00:00"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user", "nobody"], "--user 'nobody': no such user"),
        (["--quota", "requests:1k/day"], "requests must be a whole number above 0"),
        (["--quota", "requests:10/week"], "period must be day or month, not 'week'"),
        (["--quota", "calls:10/day"], "write KIND:AMOUNT/PERIOD"),
        (["--quota", "cost:abc/month"], "cost must be a number"),
        (["--quota", "requests:1/day", "--quota", "requests:2/day"], "two requests quotas per day"),
        (["--aliases", "rainymodel/chat,rainymodel/nope"], "allowed_aliases: No alias named 'rainymodel/nope'."),
        (["--policies", "free,cheap"], "allowed_policies: No policy named 'cheap'."),
        (["--default-policy", "cheap"], "--default-policy 'cheap': no such policy (policies: auto, free)"),
        (["--policies", "auto", "--default-policy", "free"], "not among the allowed policies"),
        (["--rpm", "0"], "--rpm must be a whole number above 0"),
        (["--tpm", "lots"], "--tpm must be a whole number above 0"),
        (["--expires", "next week"], "give an ISO 8601 date"),
        (["--expires", "2001-01-01"], "already passed"),
    ],
)
def test_create_refuses_bad_arguments_and_writes_nothing(routing_names, args, message):
    with pytest.raises(CommandError) as caught:
        apikey("create", "--name", "x", *args)
    assert message in str(caught.value)
    assert not APIKey.objects.exists()


def test_list_shows_prefix_status_limits_and_never_the_secret(routing_names):
    output = apikey("create", "--name", "active-key", "--rpm", "60", "--quota", "requests:1000/day")
    full_key = KEY.findall(output)[0]
    apikey("create", "--name", "revoked-key")
    apikey("create", "--name", "expired-key")
    revoked = APIKey.objects.get(name="revoked-key")
    APIKey.objects.filter(name="revoked-key").update(revoked_at=timezone.now())
    APIKey.objects.filter(name="expired-key").update(expires_at=timezone.now() - timedelta(days=1))
    listing = apikey("list")
    lines = {line.split()[1]: line for line in listing.splitlines()[1:]}
    assert listing.splitlines()[0].split() == ["PREFIX", "NAME", "OWNER", "STATUS", "LIMITS", "LAST", "USED"]
    assert "active" in lines["active-key"].split() and "rpm=60 requests=1000/day" in lines["active-key"]
    assert "revoked" in lines["revoked-key"].split() and lines["revoked-key"].startswith(revoked.prefix)
    assert "expired" in lines["expired-key"].split()
    assert full_key not in listing
    assert all(k.hashed_key not in listing for k in APIKey.objects.all())


def test_list_with_no_keys_says_how_to_create_one(db):
    assert "apikey create --name" in apikey("list")


def test_revoke_by_prefix(db):
    apikey("create", "--name", "x")
    key = APIKey.objects.get()
    assert f"Revoked key {key.prefix}" in apikey("revoke", key.prefix)
    assert APIKey.objects.get().revoked_at is not None
    assert "already revoked" in apikey("revoke", key.prefix)


def test_revoke_by_full_key(db):
    full_key = KEY.findall(apikey("create", "--name", "x"))[0]
    apikey("revoke", full_key)
    assert APIKey.objects.get().is_revoked


def test_revoke_refuses_a_full_key_whose_secret_does_not_match(db):
    full_key = KEY.findall(apikey("create", "--name", "x"))[0]
    wrong = full_key[:-1] + ("x" if full_key[-1] != "x" else "y")
    with pytest.raises(CommandError, match="no API key matches"):
        apikey("revoke", wrong)
    assert not APIKey.objects.get().is_revoked


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "rm-doesnotexist",
            "no API key matches 'rm-doesnotexist': keys are looked up by their first 12 characters "
            "and no key has the prefix 'rm-doesnotex'; nothing was revoked",
        ),
        ("rm-abcdefghi", "no API key has the prefix 'rm-abcdefghi'; nothing was revoked"),
        ("abc", "is not a key or key prefix"),
    ],
)
def test_revoke_refuses_unknown_keys_saying_what_was_looked_up(db, value, message):
    with pytest.raises(CommandError) as caught:
        apikey("revoke", value)
    assert message in str(caught.value)


def test_revoke_of_a_mistyped_full_key_does_not_echo_it(db):
    full_key = KEY.findall(apikey("create", "--name", "x"))[0]
    wrong = full_key[:-1] + ("x" if full_key[-1] != "x" else "y")
    with pytest.raises(CommandError) as caught:
        apikey("revoke", wrong)
    message = str(caught.value)
    assert f"a key has its prefix '{full_key[:12]}' but the rest differs" in message and wrong not in message


def test_list_times_carry_their_utc_offset(db):
    apikey("create", "--name", "x", "--expires", "2099-01-01T12:00:00+02:00")
    APIKey.objects.update(last_used_at=datetime(2098, 5, 6, 7, 8, tzinfo=UTC))
    line = apikey("list").splitlines()[1]
    assert "expires=2099-01-01T10:00+00:00" in line and line.endswith("2098-05-06T07:08+00:00")
