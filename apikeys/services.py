"""Actions that write API keys. Each returns what the caller needs and bumps the config version so every
worker's snapshot sees the change within seconds."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apikeys.keys import generate_key, hash_key, key_prefix
from apikeys.models import APIKey, Quota, UserKeyCaps


@transaction.atomic
def apikey_create(
    *,
    name,
    owner=None,
    rpm_limit=None,
    tpm_limit=None,
    max_concurrent=None,
    allowed_aliases=(),
    allowed_policies=(),
    default_policy=None,
    expires_at=None,
    quotas=(),
) -> tuple[APIKey, str]:
    """Create a key and return it with the full key string, which is never retrievable again.

    `quotas` is an iterable of (period, field, value), e.g. ("day", "max_requests", 1000).
    """
    api_key = APIKey(
        name=name,
        owner=owner,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_concurrent=max_concurrent,
        allowed_aliases=list(allowed_aliases),
        allowed_policies=list(allowed_policies),
        default_policy=default_policy,
        expires_at=expires_at,
    )
    full_key = apikey_assign_secret(api_key=api_key)
    api_key.full_clean()
    api_key.save()
    by_period: dict[str, Quota] = {}
    for period, field, value in quotas:
        quota = by_period.setdefault(period, Quota(api_key=api_key, period=period))
        setattr(quota, field, value)
    for quota in by_period.values():
        quota.full_clean()
        quota.save()
    return api_key, full_key


def apikey_assign_secret(*, api_key: APIKey) -> str:
    """Give a new, unsaved key its secret: set its prefix and HMAC and return the full key, which the caller
    shows once and nobody stores. Used by `apikey_create` and by the admin's add form."""
    while True:
        full_key = generate_key()
        if not APIKey.objects.filter(prefix=key_prefix(full_key)).exists():
            break
    api_key.prefix = key_prefix(full_key)
    api_key.hashed_key = hash_key(full_key)
    return full_key


def apikey_revoke(*, api_key: APIKey) -> APIKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def apikey_owner_create(*, username: str):
    """A plain user to own keys (`apikey create --create-user`): not staff, no usable password, so nobody can
    sign in as them until an admin sets one; once signed in they see only their own keys' usage."""
    User = get_user_model()
    owner = User(**{User.USERNAME_FIELD: username}, is_staff=False, is_superuser=False)
    owner.set_unusable_password()
    owner.full_clean()
    owner.save()
    return owner


# --- self-service (the usage pages: docs/users.md) -----------------------------------------------------------

QUOTA_CAP_FIELDS = {
    ("day", "max_requests"): "max_requests_per_day",
    ("month", "max_requests"): "max_requests_per_month",
    ("day", "max_tokens"): "max_tokens_per_day",
    ("month", "max_tokens"): "max_tokens_per_month",
    ("day", "max_cost_usd"): "max_cost_usd_per_day",
    ("month", "max_cost_usd"): "max_cost_usd_per_month",
}
DEFAULT_ROTATION_GRACE_HOURS = 24


class CapExceeded(Exception):
    """A user asked for more than staff allow them; `cap` names the UserKeyCaps field, `message` says it plainly."""

    def __init__(self, cap: str, message: str):
        super().__init__(message)
        self.cap = cap
        self.message = message


def apikey_caps_for(*, user) -> UserKeyCaps | None:
    """The caps that bind `user`: their own row, else the default row (no user), else None (no caps). Staff are
    never capped."""
    if user.is_staff:
        return None
    own = UserKeyCaps.objects.filter(user=user).first()
    return own or UserKeyCaps.objects.filter(user__isnull=True).first()


def _within(cap_value, value, *, cap: str, label: str):
    """`value` if within the cap; the cap itself when the user left it empty; CapExceeded when over."""
    if cap_value is None:
        return value
    if value is None:
        return cap_value
    if value > cap_value:
        raise CapExceeded(cap, f"{label} may be at most {cap_value} (cap: {cap}).")
    return value


def _names_within(allowed: list[str], asked, *, cap: str, label: str) -> list[str]:
    asked = list(asked or ())
    if not allowed:
        return asked
    if not asked:
        return list(allowed)
    outside = [n for n in asked if n not in allowed]
    if outside:
        raise CapExceeded(cap, f"{label} {', '.join(map(repr, outside))} not allowed for you (cap: {cap}).")
    return asked


@transaction.atomic
def apikey_create_for_user(
    *,
    user,
    name,
    expires_at=None,
    rpm_limit=None,
    tpm_limit=None,
    max_concurrent=None,
    allowed_aliases=(),
    allowed_policies=(),
    quotas=(),
) -> tuple[APIKey, str]:
    """A user makes a key for themselves, within their caps (`apikey_caps_for`): a limit left empty gets the cap,
    one above it is refused with CapExceeded naming the cap. Returns the key and the full key (shown once)."""
    caps = apikey_caps_for(user=user)
    if caps is not None:
        # Lock the user's row so two concurrent creates cannot both pass the count.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if caps.max_keys is not None:
            held = APIKey.objects.filter(owner=user, revoked_at__isnull=True).count()
            if held >= caps.max_keys:
                raise CapExceeded("max_keys", f"You may hold at most {caps.max_keys} keys (cap: max_keys).")
        rpm_limit = _within(caps.max_rpm, rpm_limit, cap="max_rpm", label="Requests per minute")
        tpm_limit = _within(caps.max_tpm, tpm_limit, cap="max_tpm", label="Tokens per minute")
        max_concurrent = _within(caps.max_concurrent, max_concurrent, cap="max_concurrent", label="Requests at once")
        asked = {(period, field): value for period, field, value in quotas}
        quotas = []
        for (period, field), cap_field in QUOTA_CAP_FIELDS.items():
            label = f"{field.removeprefix('max_').replace('_', ' ')} per {period}"
            value = _within(getattr(caps, cap_field), asked.get((period, field)), cap=cap_field, label=label)
            if value is not None:
                quotas.append((period, field, value))
        allowed_aliases = _names_within(caps.allowed_aliases, allowed_aliases, cap="allowed_aliases", label="Aliases")
        allowed_policies = _names_within(
            caps.allowed_policies, allowed_policies, cap="allowed_policies", label="Policies"
        )
    return apikey_create(
        name=name,
        owner=user,
        expires_at=expires_at,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_concurrent=max_concurrent,
        allowed_aliases=allowed_aliases,
        allowed_policies=allowed_policies,
        quotas=quotas,
    )


def apikey_max_grace(*, user) -> timedelta:
    caps = apikey_caps_for(user=user)
    hours = DEFAULT_ROTATION_GRACE_HOURS if caps is None else caps.max_rotation_grace_hours
    return timedelta(hours=hours)


@transaction.atomic
def apikey_rotate(*, api_key: APIKey, grace: timedelta, max_grace: timedelta | None = None) -> tuple[APIKey, str]:
    """Give the same key (same row: history, limits, quotas kept) a new secret; the old one keeps working for
    `grace` (refused with CapExceeded past `max_grace`). The prefix stays, so the log and the pages still name the
    key the same way; the other 31 characters are new. Returns the key and its new full key, shown once."""
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    if max_grace is not None and grace > max_grace:
        hours = max_grace.total_seconds() / 3600
        raise CapExceeded(
            "max_rotation_grace_hours", f"The grace may be at most {hours:g} hours (cap: max_rotation_grace_hours)."
        )
    api_key = APIKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.revoked_at is not None:
        raise ValueError("a revoked key cannot be rotated")
    full_key = api_key.prefix + generate_key()[len(api_key.prefix) :]
    api_key.previous_hashed_key = api_key.hashed_key if grace > timedelta(0) else ""
    api_key.previous_valid_until = timezone.now() + grace if grace > timedelta(0) else None
    api_key.hashed_key = hash_key(full_key)
    # The HMACs are kept out of the audit trail, so the rotation is recorded by its reason (audit/history.py).
    api_key._change_reason = "secret rotated"  # type: ignore[attr-defined]  # read by django-simple-history
    api_key.save(update_fields=["hashed_key", "previous_hashed_key", "previous_valid_until"])
    return api_key, full_key
