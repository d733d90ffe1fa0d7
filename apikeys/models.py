"""Who may call RainyModel, and how much: API keys and their quotas (SPEC §3, §7).

The full key is never stored: only its first 12 characters (`prefix`, for lookup and display) and an HMAC-SHA256
keyed by SECRET_KEY (`hashed_key`).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

PERIODS = ("day", "month")


def validate_name_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError('Give a JSON list of names, e.g. ["rainymodel/chat"] (empty list = all).')


class APIKey(models.Model):
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys"
    )
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    allowed_aliases = models.JSONField(default=list, blank=True, validators=[validate_name_list])
    allowed_policies = models.JSONField(default=list, blank=True, validators=[validate_name_list])
    default_policy = models.ForeignKey("routing.Policy", null=True, blank=True, on_delete=models.SET_NULL)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    max_concurrent = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def clean(self):
        """Names in allowed_aliases / allowed_policies must exist, and the default policy must be allowed."""
        from routing.models import Alias, Policy

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
        if allowed_policies and self.default_policy_id and self.default_policy.name.lower() not in allowed_policies:
            errors["default_policy"] = (
                f"The default policy {self.default_policy.name!r} is not among the allowed policies."
            )
        if errors:
            raise ValidationError(errors)

    @property
    def is_revoked(self):
        return self.revoked_at is not None

    def is_expired(self, now=None):
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class Quota(models.Model):
    api_key = models.ForeignKey(APIKey, related_name="quotas", on_delete=models.CASCADE)
    period = models.CharField(max_length=10, choices=[(p, p) for p in PERIODS])
    max_requests = models.PositiveBigIntegerField(null=True, blank=True)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True,
                                       validators=[MinValueValidator(0)])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "period"], name="one_quota_per_period")]

    def __str__(self):
        return f"{self.period} quota"

    def clean(self):
        if self.max_requests is None and self.max_tokens is None and self.max_cost_usd is None:
            raise ValidationError("Set at least one of max requests, max tokens or max cost.")
