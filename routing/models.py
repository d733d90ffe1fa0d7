"""What staff configure: providers, aliases with their routes, policies, and the catch-all setting (SPEC §3).

These models are read by the request path only through `routing.snapshot`, never directly.
"""

import re

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

TIERS = ("free", "internal", "premium")
TIER_CHOICES = [(t, t) for t in TIERS]
PROVIDER_KINDS = ("hf", "ollama", "openrouter", "openai")
# Capitals only: real environment variable names are, and secrets (hf_…, sk-or-…) never are, so a pasted secret
# is refused instead of being stored in the database.
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")

positive = MinValueValidator(0.001)
non_negative = MinValueValidator(0)


def validate_tiers(value):
    if not isinstance(value, list) or not value:
        raise ValidationError("List at least one tier, e.g. [\"free\", \"internal\", \"premium\"].")
    unknown = [t for t in value if t not in TIERS]
    if unknown:
        raise ValidationError(f"Unknown tier(s) {unknown}; tiers are {', '.join(TIERS)}.")
    if len(set(value)) != len(value):
        raise ValidationError("Each tier may appear only once.")


def validate_base_url(value):
    if not re.match(r"^https?://[^\s/]+", value or ""):
        raise ValidationError("Base URL must start with http:// or https:// and name a host.")
    if not value.rstrip("/").endswith("/v1"):
        raise ValidationError("Base URL must end in /v1 (the OpenAI-compatible API root), e.g. https://host/v1.")


def validate_extra_headers(value):
    if not isinstance(value, dict):
        raise ValidationError("Extra headers must be a JSON object of header name to string value.")
    for name, header_value in value.items():
        if not re.match(r"^[A-Za-z0-9-]+$", str(name)) or not isinstance(header_value, str):
            raise ValidationError(f"Extra header {name!r} must be a token name with a string value.")


def validate_env_name(value):
    if value and not ENV_NAME.match(value):
        raise ValidationError(
            "Give the NAME of an environment variable (capitals, digits, _; e.g. HF_TOKEN), not the secret itself."
        )


class Provider(models.Model):
    name = models.SlugField(unique=True, help_text="Short unique name, e.g. hf, ollama-primary.")
    kind = models.CharField(max_length=20, choices=[(k, k) for k in PROVIDER_KINDS])
    tier = models.CharField(max_length=20, choices=TIER_CHOICES)
    base_url = models.CharField(max_length=500, validators=[validate_base_url], help_text="Ends in /v1.")
    api_key_env = models.CharField(
        max_length=100, blank=True, validators=[validate_env_name],
        help_text="Name of the environment variable holding this provider's secret. The secret is never stored here.",
    )
    extra_headers = models.JSONField(default=dict, blank=True, validators=[validate_extra_headers])
    enabled = models.BooleanField(default=True)
    connect_timeout_s = models.FloatField(default=5, validators=[positive])
    first_token_timeout_s = models.FloatField(default=10, validators=[positive])
    idle_timeout_s = models.FloatField(default=20, validators=[positive])
    request_timeout_s = models.FloatField(default=120, validators=[positive])
    max_retries = models.PositiveSmallIntegerField(default=2)
    breaker_failures = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1)])
    breaker_cooldown_s = models.FloatField(default=15, validators=[positive])
    credit_cooldown_s = models.FloatField(default=3600, validators=[positive])

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")


class Alias(models.Model):
    name = models.CharField(max_length=200, unique=True, help_text="The model name clients send, e.g. rainymodel/auto.")
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    listed = models.BooleanField(default=True, help_text="Shown in /v1/models.")
    default_policy = models.ForeignKey("Policy", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "aliases"

    def __str__(self):
        return self.name

    def clean(self):
        if not self.name or self.name != self.name.strip():
            raise ValidationError({"name": "Alias names may not be empty or start/end with spaces."})


class Route(models.Model):
    alias = models.ForeignKey(Alias, related_name="routes", on_delete=models.CASCADE)
    provider = models.ForeignKey(Provider, related_name="routes", on_delete=models.PROTECT)
    upstream_model = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=0, help_text="Order inside its tier; lower goes first.")
    weight = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)],
        help_text="Routes with the same tier and position share traffic in proportion to weight.",
    )
    enabled = models.BooleanField(default=True)
    context_window = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens, if known.")
    supports_prefill = models.BooleanField(default=False, help_text="Accepts an assistant prefill to continue.")
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=0, validators=[non_negative])
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=0, validators=[non_negative])

    class Meta:
        ordering = ["alias", "position", "id"]

    def __str__(self):
        return f"{self.alias.name}: {self.provider.name}/{self.upstream_model}"

    def clean(self):
        # An empty value is already refused as blank; this catches one made only of spaces.
        if self.upstream_model and not self.upstream_model.strip():
            raise ValidationError({"upstream_model": "Name the model the provider should run, e.g. qwen2.5:14b."})

    @property
    def tier(self):
        return self.provider.tier


class Policy(models.Model):
    name = models.SlugField(unique=True)
    description = models.TextField(blank=True)
    tiers = models.JSONField(validators=[validate_tiers], help_text='Ordered tiers, e.g. ["free", "internal"].')
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_policy"
            )
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.name and self.name.lower() == "default":
            raise ValidationError({"name": "'default' is reserved: it means the default policy in the header."})
        if self.is_default:
            others = Policy.objects.filter(is_default=True).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError(
                    {"is_default": f"{others.first().name} is already the default policy; untick it first."}
                )


class RoutingSettings(models.Model):
    """The single row of global routing settings."""

    catch_all_alias = models.ForeignKey(
        Alias, null=True, blank=True, on_delete=models.SET_NULL,
        help_text="Model names outside the rainymodel/ namespace are served by this alias.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "routing settings"

    def __str__(self):
        return "Routing settings"

    @classmethod
    def load(cls):
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)


class ConfigVersion(models.Model):
    """A counter bumped on every configuration or key change; workers rebuild their snapshot when it moves.

    Kept in the database as well as the shared cache so a single process without Redis (and `manage.py` commands
    run beside `make run`) still propagate changes.
    """

    version = models.BigIntegerField(default=0)
