"""What staff configure: providers, aliases with their routes, policies, and the catch-all setting (SPEC §3).

These models are read by the request path only through `routing.snapshot`, never directly. Every change to them is
recorded in the audit trail (`history = audited()`, audit/history.py).
"""

import re

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from audit.history import audited, hide_credential_headers, hide_url_password
from routing.tiers import TIERS

TIER_CHOICES = [(t, t) for t in TIERS]
PROVIDER_KINDS = ("hf", "ollama", "openrouter", "openai")
# Capitals only: real environment variable names are, and secrets (hf_…, sk-or-…) never are, so a pasted secret
# is refused instead of being stored in the database.
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class Endpoint(models.TextChoices):
    """The API operations a route can serve (the one home of these names). A route's empty `endpoints` list
    means every one of them."""

    CHAT = "chat", "chat"  # /v1/chat/completions (and what is translated onto it)
    EMBEDDINGS = "embeddings", "embeddings"  # /v1/embeddings
    COMPLETIONS = "completions", "completions"  # legacy /v1/completions, including `suffix` (fill-in-the-middle)


positive = MinValueValidator(0.001)
non_negative = MinValueValidator(0)


def validate_tiers(value):
    if not isinstance(value, list) or not value:
        raise ValidationError('List at least one tier, e.g. ["free", "internal", "premium"].')
    unknown = [t for t in value if t not in TIERS]
    if unknown:
        raise ValidationError(f"Unknown tier(s) {unknown}; tiers are {', '.join(TIERS)}.")
    if len(set(value)) != len(value):
        raise ValidationError("Each tier may appear only once.")


def validate_endpoints(value):
    if not isinstance(value, list):
        raise ValidationError(
            f'Endpoints must be a list of names, e.g. ["chat", "completions"]; '
            f"empty means every endpoint. Endpoints are {', '.join(Endpoint.values)}."
        )
    unknown = [e for e in value if e not in Endpoint.values]
    if unknown:
        raise ValidationError(
            f"Unknown endpoint(s) {unknown}; endpoints are {', '.join(Endpoint.values)} (empty means every endpoint)."
        )
    if len(set(value)) != len(value):
        raise ValidationError("Each endpoint may appear only once.")


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
    name = models.SlugField("name", unique=True, help_text="Short unique name, e.g. hf, ollama-primary.")
    kind = models.CharField(
        "kind",
        max_length=20,
        choices=[(k, k) for k in PROVIDER_KINDS],
        help_text="Which service this is; clients see it in the X-RainyModel-Upstream response header.",
    )
    tier = models.CharField(
        "tier",
        max_length=20,
        choices=TIER_CHOICES,
        help_text="Every route through this provider belongs to this tier; policies order tiers.",
    )
    base_url = models.CharField(
        "base URL",
        max_length=500,
        validators=[validate_base_url],
        help_text="The API root, ending in /v1, e.g. https://router.huggingface.co/v1.",
    )
    api_key_env = models.CharField(
        "secret's environment variable",
        max_length=100,
        blank=True,
        validators=[validate_env_name],
        help_text="Name of the environment variable holding this provider's secret, e.g. HF_TOKEN. The secret is "
        "never stored here. Empty: requests are sent without a key.",
    )
    extra_headers = models.JSONField(
        "extra headers",
        default=dict,
        blank=True,
        validators=[validate_extra_headers],
        help_text='Sent with every request to this provider, as a JSON object, e.g. {"X-Title": "RainyModel"}.',
    )
    enabled = models.BooleanField("enabled", default=True, help_text="A disabled provider's routes are never tried.")
    connect_timeout_s = models.FloatField(
        "connect timeout (s)",
        default=5,
        validators=[positive],
        help_text="Seconds to open a connection before trying the next route.",
    )
    first_token_timeout_s = models.FloatField(
        "first token timeout (s)",
        default=10,
        validators=[positive],
        help_text="Seconds to wait for a stream's first event before failing over.",
    )
    idle_timeout_s = models.FloatField(
        "idle timeout (s)",
        default=20,
        validators=[positive],
        help_text="Seconds a stream may go silent after its first token.",
    )
    request_timeout_s = models.FloatField(
        "request timeout (s)",
        default=120,
        validators=[positive],
        help_text="Longest one attempt may take, streams included.",
    )
    max_retries = models.PositiveSmallIntegerField(
        "retries on the same route",
        default=2,
        help_text="Retries of a route after a retryable failure (429, 5xx, timeout) before moving to the next.",
    )
    breaker_failures = models.PositiveSmallIntegerField(
        "failures that open the breaker",
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Consecutive failed attempts after which a route (or the whole provider) is taken out.",
    )
    breaker_cooldown_s = models.FloatField(
        "breaker cooldown (s)",
        default=15,
        validators=[positive],
        help_text="Seconds an open breaker keeps the route out before one probe request is let through.",
    )
    credit_cooldown_s = models.FloatField(
        "out-of-credits cooldown (s)",
        default=3600,
        validators=[positive],
        help_text="Seconds the provider is taken out after it reports exhausted credits (402).",
    )
    # api_key_env is a variable's NAME (ENV_NAME refuses a pasted secret), so it is recorded; values that may hold
    # a credential are masked.
    history = audited(redact={"extra_headers": hide_credential_headers, "base_url": hide_url_password})

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")


class Alias(models.Model):
    name = models.CharField(
        "model name", max_length=200, unique=True, help_text="The model name clients send, e.g. rainymodel/auto."
    )
    description = models.TextField("description", blank=True, help_text="For people; shown in the admin only.")
    enabled = models.BooleanField(
        "enabled", default=True, help_text="A disabled alias is treated as an unknown model name."
    )
    listed = models.BooleanField("listed in /v1/models", default=True, help_text="Shown in /v1/models.")
    default_policy = models.ForeignKey(
        "Policy",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        verbose_name="default policy",
        help_text="Used when neither the request header nor the key names a policy. Empty: the global default.",
    )
    history = audited()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "aliases"

    def __str__(self):
        return self.name

    def clean(self):
        if not self.name or self.name != self.name.strip():
            raise ValidationError({"name": "Alias names may not be empty or start/end with spaces."})


class Route(models.Model):
    # Short labels: they are the column headers of the alias page's route table, which must fit a laptop screen.
    alias = models.ForeignKey(
        Alias,
        related_name="routes",
        on_delete=models.CASCADE,
        verbose_name="alias",
        help_text="The alias this route serves.",
    )
    provider = models.ForeignKey(
        Provider,
        related_name="routes",
        on_delete=models.PROTECT,
        verbose_name="provider",
        help_text="Where the request is sent; the route's tier is the provider's.",
    )
    upstream_model = models.CharField(
        "upstream model", max_length=200, help_text="The model name the provider expects, e.g. qwen2.5:14b."
    )
    position = models.PositiveIntegerField("position", default=0, help_text="Order inside its tier; lower goes first.")
    weight = models.PositiveIntegerField(
        "weight",
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Routes with the same tier and position share traffic in proportion to weight.",
    )
    enabled = models.BooleanField("enabled", default=True, help_text="A disabled route is never tried.")
    context_window = models.PositiveIntegerField(
        "context", null=True, blank=True, help_text="Context window in tokens, if known."
    )
    supports_prefill = models.BooleanField(
        "prefill",
        default=False,
        help_text="Accepts an assistant prefill, so a broken stream can be continued on this route.",
    )
    input_price_per_mtok = models.DecimalField(
        "input $/M",
        max_digits=12,
        decimal_places=6,
        default=0,
        validators=[non_negative],
        help_text="USD per million prompt tokens.",
    )
    output_price_per_mtok = models.DecimalField(
        "output $/M",
        max_digits=12,
        decimal_places=6,
        default=0,
        validators=[non_negative],
        help_text="USD per million completion tokens.",
    )
    endpoints = models.JSONField(
        "endpoints",
        default=list,
        blank=True,
        validators=[validate_endpoints],
        help_text="What the upstream serves for this model: chat, embeddings, completions (legacy and "
        "fill-in-the-middle). None ticked: every endpoint.",
    )
    history = audited()

    class Meta:
        ordering = ["alias", "position", "id"]

    def __str__(self):
        return f"{self.alias.name}: {self.provider.name}/{self.upstream_model}"

    def clean(self):
        # An empty value is already refused as blank; this catches one made only of spaces.
        if self.upstream_model and not self.upstream_model.strip():
            raise ValidationError({"upstream_model": "Name the model the provider should run, e.g. qwen2.5:14b."})
        # One spelling per set of endpoints (the choices' order), so exports do not depend on how it was typed.
        if isinstance(self.endpoints, list) and all(e in Endpoint.values for e in self.endpoints):
            self.endpoints = sorted(set(self.endpoints), key=Endpoint.values.index)

    def serves(self, endpoint: str) -> bool:
        """Whether this route may be tried for `endpoint` (an empty list serves every endpoint)."""
        return not self.endpoints or endpoint in self.endpoints

    @property
    def tier(self):
        return self.provider.tier


class Policy(models.Model):
    name = models.SlugField(
        "name", unique=True, help_text="What clients send in X-RainyModel-Policy, e.g. cheap. 'default' is reserved."
    )
    description = models.TextField("description", blank=True, help_text="For people; shown in the admin only.")
    tiers = models.JSONField(
        "tier order", validators=[validate_tiers], help_text='Ordered tiers, e.g. ["free", "internal"].'
    )
    is_default = models.BooleanField(
        "default policy", default=False, help_text="Used when nothing else names a policy. Exactly one policy is."
    )
    history = audited()

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
            other = Policy.objects.filter(is_default=True).exclude(pk=self.pk).first()
            if other is not None:
                raise ValidationError({"is_default": f"{other.name} is already the default policy; untick it first."})


class RoutingSettings(models.Model):
    """The single row of global routing settings."""

    catch_all_alias = models.ForeignKey(
        Alias,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        verbose_name="catch-all alias",
        help_text="Model names outside the rainymodel/ namespace are served by this alias. Empty: they get 404.",
    )
    history = audited()

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
