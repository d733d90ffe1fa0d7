"""Who may call RainyModel, and how much: API keys and their quotas (SPEC §3, §7).

The full key is never stored: only its first 12 characters (`prefix`, for lookup and display) and an HMAC-SHA256
keyed by SECRET_KEY (`hashed_key`). Every change to these models is recorded in the audit trail (audit/history.py),
which never holds the HMACs.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from audit.history import audited
from routing.models import Alias, Policy

PERIODS = ("day", "month")


def validate_name_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError('Give a JSON list of names, e.g. ["rainymodel/chat"] (empty list = all).')


class APIKey(models.Model):
    name = models.CharField("name", max_length=200, help_text="Who or what uses the key, e.g. alice-laptop.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="api_keys",
        verbose_name="owner",
        help_text="The user who sees this key's usage on the usage pages.",
    )
    prefix = models.CharField(
        "prefix",
        max_length=12,
        unique=True,
        editable=False,
        help_text="The key's first 12 characters: the only part ever shown again.",
    )
    hashed_key = models.CharField(
        "key HMAC", max_length=64, editable=False, help_text="HMAC-SHA256 of the full key, keyed by SECRET_KEY."
    )
    created_at = models.DateTimeField("created", default=timezone.now, editable=False)
    expires_at = models.DateTimeField(
        "expires", null=True, blank=True, help_text="After this the key gets 401 key_expired. Empty: never."
    )
    revoked_at = models.DateTimeField(
        "revoked", null=True, blank=True, help_text="When the key was revoked; a revoked key gets 401."
    )
    last_used_at = models.DateTimeField("last used", null=True, blank=True, editable=False)
    previous_hashed_key = models.CharField(
        "previous key HMAC",
        max_length=64,
        blank=True,
        default="",
        editable=False,
        help_text="After a rotation: HMAC of the replaced secret, accepted until the grace below ends.",
    )
    previous_valid_until = models.DateTimeField(
        "previous secret valid until",
        null=True,
        blank=True,
        editable=False,
        help_text="After a rotation: when the replaced secret stops working.",
    )
    allowed_aliases = models.JSONField(
        "allowed aliases",
        default=list,
        blank=True,
        validators=[validate_name_list],
        help_text="Aliases this key may call. None ticked: all.",
    )
    allowed_policies = models.JSONField(
        "allowed policies",
        default=list,
        blank=True,
        validators=[validate_name_list],
        help_text="Policies this key may ask for. None ticked: all.",
    )
    default_policy = models.ForeignKey(
        "routing.Policy",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        verbose_name="default policy",
        help_text="Used when a request sends no X-RainyModel-Policy. Must be among the allowed policies.",
    )
    rpm_limit = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, validators=[MinValueValidator(1)], help_text="Empty: unlimited."
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, validators=[MinValueValidator(1)], help_text="Empty: unlimited."
    )
    max_concurrent = models.PositiveIntegerField(
        "requests at once",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most requests in flight at the same time. Empty: unlimited.",
    )
    # The HMACs are secret-derived: never in the audit trail (a rotation is recorded by its reason). last_used_at is
    # bookkeeping the log writer updates, not a change anyone made.
    history = audited(excluded_fields=["hashed_key", "previous_hashed_key", "last_used_at"])

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                name="one_key_name_per_owner",
                violation_error_message="This owner already has a key with this name.",
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def clean(self):
        """Names in allowed_aliases / allowed_policies must exist, and the default policy must be allowed."""
        errors = {}
        if isinstance(self.allowed_aliases, list) and self.allowed_aliases:
            known = set(Alias.objects.filter(name__in=self.allowed_aliases).values_list("name", flat=True))
            unknown = [n for n in self.allowed_aliases if n not in known]
            if unknown:
                errors["allowed_aliases"] = f"No alias named {', '.join(map(repr, unknown))}."
        allowed_policies = None
        if isinstance(self.allowed_policies, list) and self.allowed_policies:
            allowed_policies = {n.lower() for n in self.allowed_policies if isinstance(n, str)}
            known = {n.lower() for n in Policy.objects.values_list("name", flat=True)}
            unknown = [n for n in self.allowed_policies if isinstance(n, str) and n.lower() not in known]
            if unknown:
                errors["allowed_policies"] = f"No policy named {', '.join(map(repr, unknown))}."
        default_policy = self.default_policy if self.default_policy_id else None
        if allowed_policies and default_policy is not None and default_policy.name.lower() not in allowed_policies:
            errors["default_policy"] = f"The default policy {default_policy.name!r} is not among the allowed policies."
        if errors:
            raise ValidationError(errors)

    @property
    def is_revoked(self):
        return self.revoked_at is not None

    def is_expired(self, now=None):
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def status(self) -> str:
        """`revoked`, `expired` or `active`, as the admin and the `apikey` command show it."""
        if self.is_revoked:
            return "revoked"
        if self.is_expired():
            return "expired"
        return "active"


class Quota(models.Model):
    api_key = models.ForeignKey(APIKey, related_name="quotas", on_delete=models.CASCADE, verbose_name="API key")
    period = models.CharField(
        "per", max_length=10, choices=[(p, p) for p in PERIODS], help_text="Calendar day or month, UTC."
    )
    max_requests = models.PositiveBigIntegerField(
        "requests", null=True, blank=True, help_text="Most requests per period. Empty: no limit."
    )
    max_tokens = models.PositiveBigIntegerField(
        "tokens", null=True, blank=True, help_text="Most prompt + completion tokens per period. Empty: no limit."
    )
    max_cost_usd = models.DecimalField(
        "cost (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Most spend in US dollars per period. Empty: no limit.",
    )
    history = audited()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "period"], name="one_quota_per_period")]

    def __str__(self):
        return f"{self.period} quota"

    def clean(self):
        if self.max_requests is None and self.max_tokens is None and self.max_cost_usd is None:
            raise ValidationError("Set at least one of max requests, max tokens or max cost.")


class UserKeyCaps(models.Model):
    """What a user may give themselves on the usage pages (docs/users.md). The row with no user is the default
    for users without their own. Empty fields: no cap. Staff are never capped."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="key_caps",
        verbose_name="user",
        help_text="Empty: the default caps for every user without their own.",
    )
    max_keys = models.PositiveIntegerField(
        "keys", null=True, blank=True, help_text="Most keys (not revoked) the user may hold. Empty: no cap."
    )
    max_rpm = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Largest rpm limit a key may have. Empty: no cap."
    )
    max_tpm = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, help_text="Largest tpm limit a key may have. Empty: no cap."
    )
    max_concurrent = models.PositiveIntegerField(
        "requests at once", null=True, blank=True, help_text="Largest concurrency a key may have. Empty: no cap."
    )
    max_requests_per_day = models.PositiveBigIntegerField("requests per day", null=True, blank=True)
    max_requests_per_month = models.PositiveBigIntegerField("requests per month", null=True, blank=True)
    max_tokens_per_day = models.PositiveBigIntegerField("tokens per day", null=True, blank=True)
    max_tokens_per_month = models.PositiveBigIntegerField("tokens per month", null=True, blank=True)
    max_cost_usd_per_day = models.DecimalField(
        "cost per day (USD)", max_digits=14, decimal_places=6, null=True, blank=True
    )
    max_cost_usd_per_month = models.DecimalField(
        "cost per month (USD)", max_digits=14, decimal_places=6, null=True, blank=True
    )
    max_rotation_grace_hours = models.PositiveIntegerField(
        "rotation grace (hours)",
        default=24,
        help_text="Longest time a rotated key's old secret may keep working.",
    )
    allowed_aliases = models.JSONField(
        "allowed aliases",
        default=list,
        blank=True,
        validators=[validate_name_list],
        help_text="Aliases the user may give their keys. Empty list: all.",
    )
    allowed_policies = models.JSONField(
        "allowed policies",
        default=list,
        blank=True,
        validators=[validate_name_list],
        help_text="Policies the user may give their keys. Empty list: all.",
    )
    history = audited()

    class Meta:
        verbose_name = "user key caps"
        verbose_name_plural = "user key caps"
        constraints = [
            models.UniqueConstraint(fields=["user"], name="one_default_key_caps", condition=models.Q(user__isnull=True))
        ]

    def __str__(self):
        return f"caps for {self.user}" if self.user_id else "default caps"


class UserLimits(models.Model):
    """Limits a user's keys share (issue 14): every key owned by the user counts against these, on top of its own
    limits. Mirrors APIKey's rpm/tpm/concurrency fields; the user's day/month quotas are `UserQuota` rows."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rainymodel_limits", verbose_name="user"
    )
    rpm_limit = models.PositiveIntegerField(
        "requests per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="All the user's keys together. Empty: unlimited.",
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens per minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="All the user's keys together. Empty: unlimited.",
    )
    max_concurrent = models.PositiveIntegerField(
        "requests at once",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most requests in flight at once over all the user's keys. Empty: unlimited.",
    )
    history = audited()

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self):
        return f"limits of {self.user}"


class UserQuota(models.Model):
    """A user's quota for one period: the admitted requests, tokens and cost of all the user's keys together."""

    user_limits = models.ForeignKey(
        UserLimits, related_name="quotas", on_delete=models.CASCADE, verbose_name="user limits"
    )
    period = models.CharField(
        "per", max_length=10, choices=[(p, p) for p in PERIODS], help_text="Calendar day or month, UTC."
    )
    max_requests = models.PositiveBigIntegerField(
        "requests", null=True, blank=True, help_text="Most requests per period. Empty: no limit."
    )
    max_tokens = models.PositiveBigIntegerField(
        "tokens", null=True, blank=True, help_text="Most prompt + completion tokens per period. Empty: no limit."
    )
    max_cost_usd = models.DecimalField(
        "cost (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Most spend in US dollars per period. Empty: no limit.",
    )
    history = audited()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_limits", "period"], name="one_user_quota_per_period")]

    def __str__(self):
        return f"{self.period} user quota"

    def clean(self):
        if self.max_requests is None and self.max_tokens is None and self.max_cost_usd is None:
            raise ValidationError("Set at least one of max requests, max tokens or max cost.")
