"""Actions that write API keys. Each returns what the caller needs and bumps the config version so every
worker's snapshot sees the change within seconds."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apikeys.keys import generate_key, hash_key, key_prefix
from apikeys.models import APIKey, Quota


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
