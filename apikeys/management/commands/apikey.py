"""`python manage.py apikey create | list | revoke | user-limits` (SPEC §9): the operator's door onto apikeys.services.

`create` prints the full key once; it is never stored, so it can never be printed again. Every bad argument
(unknown user, alias or policy, malformed quota or date) is a CommandError naming the problem: exit code 1, no
traceback, nothing written. Every change is recorded in the audit trail as made by `apikey create` (`revoke`,
`user-limits`) and by `--actor` or the OS user (audit/history.py).
"""

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from apikeys.keys import KEY_PREFIX, PREFIX_LENGTH, key_prefix, looks_like_key, verify_key
from apikeys.models import PERIODS, APIKey, UserLimits, UserQuota
from apikeys.services import apikey_create, apikey_owner_create, apikey_revoke
from audit.history import acting_as_command, add_actor_argument
from routing.models import Policy

QUOTA_SYNTAX = re.compile(r"^(requests|tokens|cost):([^/\s]+)/(\w+)$")
QUOTA_FIELDS = {"requests": "max_requests", "tokens": "max_tokens", "cost": "max_cost_usd"}


def parse_quota(text: str) -> tuple[str, str, int | Decimal]:
    """`requests:1000/day`, `tokens:2000000/month`, `cost:5/month` -> (period, Quota field, value)."""
    match = QUOTA_SYNTAX.match(text.strip())
    if not match:
        raise CommandError(
            f"--quota {text!r}: write KIND:AMOUNT/PERIOD with KIND requests, tokens or cost and "
            f"PERIOD {' or '.join(PERIODS)}, e.g. requests:1000/day"
        )
    kind, amount, period = match.groups()
    if period not in PERIODS:
        raise CommandError(f"--quota {text!r}: period must be {' or '.join(PERIODS)}, not {period!r}")
    value: int | Decimal
    if kind == "cost":
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise CommandError(f"--quota {text!r}: cost must be a number of US dollars, e.g. cost:5/month") from None
        if not value.is_finite() or value < 0:
            raise CommandError(f"--quota {text!r}: cost must be 0 or more US dollars")
    else:
        if not amount.isdigit() or int(amount) <= 0:
            raise CommandError(f"--quota {text!r}: {kind} must be a whole number above 0")
        value = int(amount)
    return period, QUOTA_FIELDS[kind], value


def parse_expiry(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC. Must lie in the future."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--expires {text!r}: give an ISO 8601 date or time, e.g. 2026-12-31 or 2026-12-31T18:00:00+01:00"
        ) from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if moment <= timezone.now():
        raise CommandError(f"--expires {text!r}: that moment has already passed")
    return moment


def name_list(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def positive(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) <= 0:
        raise CommandError(f"{option} must be a whole number above 0, not {text!r}")
    return int(text)


def describe_errors(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    return " ".join(
        m if name == NON_FIELD_ERRORS else f"{name}: {m}" for name, ms in exc.message_dict.items() for m in ms
    )


def utc_time(moment: datetime) -> str:
    """ISO 8601 in UTC with its offset, e.g. 2026-12-31T18:00+00:00: no reader has to guess the zone."""
    return moment.astimezone(UTC).isoformat(timespec="minutes")


def no_match(key: str, prefix_exists: bool) -> str:
    """Why `revoke` found nothing, naming what was looked up: keys are found by their prefix (first
    PREFIX_LENGTH characters). Something shaped like a whole key is not echoed, in case it is a real one."""
    prefix = key_prefix(key)
    if len(key) == PREFIX_LENGTH:
        return f"no API key has the prefix {prefix!r}; nothing was revoked (see `apikey list`)"
    given = "the key given" if looks_like_key(key) else repr(key)
    if prefix_exists:
        return (
            f"no API key matches {given}: a key has its prefix {prefix!r} but the rest differs; nothing was "
            f"revoked (see `apikey list`)"
        )
    return (
        f"no API key matches {given}: keys are looked up by their first {PREFIX_LENGTH} characters and no key "
        f"has the prefix {prefix!r}; nothing was revoked (see `apikey list`)"
    )


class Command(BaseCommand):
    help = "Create, list and revoke RainyModel API keys."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke,user-limits}")
        create = actions.add_parser("create", help="Create a key and print it (once).")
        create.add_argument("--name", required=True, help="What the key is for, e.g. my-laptop.")
        create.add_argument("--user", help="Username of the key's owner (sees its usage when signed in).")
        create.add_argument(
            "--create-user",
            action="store_true",
            help="Create the --user if missing: a plain owner (not staff) without a password, "
            "who can sign in once an admin sets one.",
        )
        create.add_argument("--rpm", help="Requests per minute.")
        create.add_argument("--tpm", help="Tokens per minute.")
        create.add_argument("--max-concurrent", help="Requests in flight at once.")
        create.add_argument("--aliases", help="Comma list of aliases the key may use (default: all).")
        create.add_argument("--policies", help="Comma list of policies the key may use (default: all).")
        create.add_argument("--default-policy", help="Policy used when a request names none.")
        create.add_argument("--expires", help="ISO 8601 date or time after which the key stops working.")
        create.add_argument(
            "--quota",
            action="append",
            default=[],
            metavar="KIND:AMOUNT/PERIOD",
            help="requests:1000/day, tokens:2000000/month or cost:5/month; repeatable.",
        )
        actions.add_parser("list", help="List keys: prefix, name, owner, status, limits, last use.")
        revoke = actions.add_parser("revoke", help="Revoke a key by its prefix or the full key.")
        revoke.add_argument("key", metavar="PREFIX_OR_KEY")
        self.add_user_limits_arguments(actions)
        for writer in (create, revoke, actions.choices["user-limits"]):
            add_actor_argument(writer)

    def handle(self, *args, action, **options):
        with acting_as_command(f"apikey {action}", options.get("actor")):
            getattr(self, f"handle_{action.replace('-', '_')}")(**options)

    # --- create ---------------------------------------------------------------------------------------------

    @transaction.atomic  # a user made by --create-user is rolled back when the key is refused
    def handle_create(
        self,
        *,
        name,
        user,
        create_user,
        rpm,
        tpm,
        max_concurrent,
        aliases,
        policies,
        default_policy,
        expires,
        quota,
        **_,
    ):
        if not name.strip():
            raise CommandError("--name must not be empty")
        if create_user and not user:
            raise CommandError("--create-user needs --user USERNAME")
        owner = None
        created_owner = False
        if user:
            owner = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()
            if owner is None and create_user:
                try:
                    owner = apikey_owner_create(username=user)
                except ValidationError as exc:
                    raise CommandError(f"--user {user!r}: user not created: {describe_errors(exc)}") from None
                created_owner = True
            if owner is None:
                raise CommandError(
                    f"--user {user!r}: no such user; add --create-user to create it as a plain "
                    f"owner (no staff access, no password until an admin sets one)"
                )
        policy = None
        if default_policy:
            policy = Policy.objects.filter(name__iexact=default_policy).first()
            if policy is None:
                known = ", ".join(Policy.objects.values_list("name", flat=True)) or "none defined"
                raise CommandError(f"--default-policy {default_policy!r}: no such policy (policies: {known})")
        quotas = [parse_quota(q) for q in quota]
        seen = set()
        for period, field, _maximum in quotas:
            if (period, field) in seen:
                raise CommandError(f"--quota: two {field.removeprefix('max_')} quotas per {period}; give one")
            seen.add((period, field))
        try:
            api_key, full_key = apikey_create(
                name=name.strip(),
                owner=owner,
                rpm_limit=positive("--rpm", rpm),
                tpm_limit=positive("--tpm", tpm),
                max_concurrent=positive("--max-concurrent", max_concurrent),
                allowed_aliases=name_list(aliases),
                allowed_policies=name_list(policies),
                default_policy=policy,
                expires_at=parse_expiry(expires) if expires else None,
                quotas=quotas,
            )
        except ValidationError as exc:
            raise CommandError(f"key not created: {describe_errors(exc)}") from None
        if created_owner:
            self.stdout.write(
                f"Created user {user!r} (not staff, no password: set one in the admin to let them "
                f"sign in and see their usage)."
            )
        self.stdout.write(f"Created API key {api_key.name!r} (prefix {api_key.prefix}).")
        self.stdout.write("This is the only time the full key is shown; store it now:")
        self.stdout.write(full_key)

    # --- list -----------------------------------------------------------------------------------------------

    def handle_list(self, **_):
        rows = [("PREFIX", "NAME", "OWNER", "STATUS", "LIMITS", "LAST USED")]
        for api_key in APIKey.objects.select_related("owner", "default_policy").prefetch_related("quotas"):
            rows.append(
                (
                    api_key.prefix,
                    api_key.name,
                    api_key.owner.get_username() if api_key.owner else "-",
                    api_key.status,
                    self._limits(api_key),
                    utc_time(api_key.last_used_at) if api_key.last_used_at else "never",
                )
            )
        if len(rows) == 1:
            self.stdout.write("No API keys yet. Create one: python manage.py apikey create --name NAME")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])

    @staticmethod
    def _limits(api_key: APIKey) -> str:
        parts = []
        for label, value in (
            ("rpm", api_key.rpm_limit),
            ("tpm", api_key.tpm_limit),
            ("concurrent", api_key.max_concurrent),
        ):
            if value is not None:
                parts.append(f"{label}={value}")
        for quota in api_key.quotas.all():
            for label, maximum in (
                ("requests", quota.max_requests),
                ("tokens", quota.max_tokens),
                ("cost", quota.max_cost_usd),
            ):
                if maximum is not None:
                    parts.append(
                        f"{label}={maximum.normalize() if isinstance(maximum, Decimal) else maximum}/{quota.period}"
                    )
        if api_key.allowed_aliases:
            parts.append(f"aliases={','.join(api_key.allowed_aliases)}")
        if api_key.allowed_policies:
            parts.append(f"policies={','.join(api_key.allowed_policies)}")
        if api_key.expires_at:
            parts.append(f"expires={utc_time(api_key.expires_at)}")
        return " ".join(parts) or "unlimited"

    # --- revoke ---------------------------------------------------------------------------------------------

    def handle_revoke(self, *, key, **_):
        key = key.strip()
        if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LENGTH:
            raise CommandError(
                f"{key!r} is not a key or key prefix: keys start with {KEY_PREFIX!r} and the prefix "
                f"is their first {PREFIX_LENGTH} characters (see `apikey list`)"
            )
        api_key = APIKey.objects.filter(prefix=key_prefix(key)).first()
        # A full key must match its stored HMAC, so a typo cannot revoke some other key that shares the prefix.
        if api_key is None or (len(key) > PREFIX_LENGTH and not verify_key(key, api_key.hashed_key)):
            raise CommandError(no_match(key, prefix_exists=api_key is not None))
        if api_key.revoked_at is not None:  # is_revoked, spelled so the type checker knows revoked_at is set
            self.stdout.write(
                f"Key {api_key.prefix} ({api_key.name}) was already revoked at {utc_time(api_key.revoked_at)}."
            )
            return
        apikey_revoke(api_key=api_key)
        self.stdout.write(f"Revoked key {api_key.prefix} ({api_key.name}); it stops working within seconds.")

    # --- user-limits ----------------------------------------------------------------------------------------

    @staticmethod
    def add_user_limits_arguments(actions):
        user_limits = actions.add_parser(
            "user-limits",
            help="Show or set the limits all of a user's keys share (on top of each key's own); prints what is "
            "in force.",
        )
        user_limits.add_argument("username", metavar="USERNAME")
        user_limits.add_argument("--rpm", help="Requests per minute, all the user's keys together.")
        user_limits.add_argument("--tpm", help="Tokens per minute, all the user's keys together.")
        user_limits.add_argument("--max-concurrent", help="Requests in flight at once, all keys together.")
        user_limits.add_argument(
            "--quota",
            action="append",
            default=[],
            metavar="KIND:AMOUNT/PERIOD",
            help="requests:1000/day, tokens:2000000/month or cost:5/month; repeatable; replaces that one amount.",
        )
        user_limits.add_argument(
            "--clear", action="store_true", help="Remove all the user's limits first (then apply any others given)."
        )

    @transaction.atomic
    def handle_user_limits(self, *, username, rpm, tpm, max_concurrent, quota, clear, **_):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        values = {
            "rpm_limit": positive("--rpm", rpm),
            "tpm_limit": positive("--tpm", tpm),
            "max_concurrent": positive("--max-concurrent", max_concurrent),
        }
        quotas = [parse_quota(q) for q in quota]
        if clear:
            UserLimits.objects.filter(user=user).delete()
        if any(v is not None for v in values.values()) or quotas:
            limits, _created = UserLimits.objects.get_or_create(user=user)
            for field, value in values.items():
                if value is not None:
                    setattr(limits, field, value)
            limits.save()
            for period, field, maximum in quotas:
                user_quota = UserQuota.objects.filter(user_limits=limits, period=period).first() or UserQuota(
                    user_limits=limits, period=period
                )
                setattr(user_quota, field, maximum)
                try:
                    user_quota.full_clean()
                except ValidationError as exc:
                    raise CommandError(f"--quota: {describe_errors(exc)}") from None
                user_quota.save()
        self.stdout.write(
            f"Limits of user {user.get_username()!r} (shared by all their keys): {self._user_limits(user)}"
        )

    @staticmethod
    def _user_limits(user) -> str:
        limits = UserLimits.objects.filter(user=user).prefetch_related("quotas").first()
        if limits is None:
            return "none"
        parts = [
            f"{label}={value}"
            for label, value in (
                ("rpm", limits.rpm_limit),
                ("tpm", limits.tpm_limit),
                ("concurrent", limits.max_concurrent),
            )
            if value is not None
        ]
        for user_quota in sorted(limits.quotas.all(), key=lambda q: PERIODS.index(q.period)):
            for label, maximum in (
                ("requests", user_quota.max_requests),
                ("tokens", user_quota.max_tokens),
                ("cost", user_quota.max_cost_usd),
            ):
                if maximum is not None:
                    amount = maximum.normalize() if isinstance(maximum, Decimal) else maximum
                    parts.append(f"{label}={amount}/{user_quota.period}")
        return " ".join(parts) or "none"
