"""Who is told (AlertRecipient, AlertWebhook, edited in the admin) and what was told (Alert, AlertDelivery).

An `Alert` row is the claim that makes an alert go out once: it is inserted by whichever worker gets there first,
and the unique constraints turn every other worker's (and a restarted worker's) insert into an IntegrityError:
- `alert_once_per_period`: one row per kind, subject, threshold and period start (a quota's 80 % of
  today, a breaker opening at one instant, the recovery of one incident);
- `alert_one_ongoing`: at most one *ongoing* row per kind and subject (an open breaker episode, a failing alias),
  which the closing event ends with a conditional UPDATE that only one worker can win.
A webhook's signing secret is stored (it must be, to sign) but never shown after it is saved and never logged.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

# What a recipient or webhook can subscribe to (an empty list: everything).
QUOTA, BREAKER, ALIAS = "quota", "breaker", "alias"
KIND_GROUPS = [
    (QUOTA, "Quota thresholds (80 / 95 / 100 %)"),
    (BREAKER, "A provider's breaker opened / closed"),
    (ALIAS, "Every route of an alias failing / answering again"),
]


class Subscriber(models.Model):
    kinds = models.JSONField(
        default=list,
        blank=True,
        help_text="Which alerts go here. None ticked: all.",
    )
    enabled = models.BooleanField(default=True, help_text="Untick to pause without losing the entry.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def wants(self, group: str) -> bool:
        return not self.kinds or group in self.kinds


class AlertRecipient(Subscriber):
    email = models.EmailField("Email address", unique=True, help_text="Gets one email per alert it subscribes to.")

    class Meta:
        ordering = ["email"]
        verbose_name = "alert recipient (email)"
        verbose_name_plural = "alert recipients (email)"

    def __str__(self) -> str:
        return self.email


class AlertWebhook(Subscriber):
    name = models.CharField(max_length=100, unique=True, help_text="Names the webhook in the admin and in logs.")
    url = models.URLField("URL", max_length=500, help_text="Receives a JSON POST per alert (docs/observability.md).")
    secret = models.CharField(
        "Signing secret",
        max_length=200,
        help_text="Signs each delivery (X-RainyModel-Signature: sha256=HMAC of timestamp.body). Never shown again.",
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "alert webhook"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # never the secret, and not the URL either (it may carry a token)
        return f"<AlertWebhook {self.pk} {self.name!r}>"


class Alert(models.Model):
    class Kind(models.TextChoices):
        QUOTA = "quota", "Quota threshold"
        BREAKER_OPENED = "breaker_opened", "Breaker opened"
        BREAKER_CLOSED = "breaker_closed", "Breaker closed"
        ALIAS_FAILING = "alias_failing", "Alias failing"
        ALIAS_RECOVERED = "alias_recovered", "Alias answering again"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    subject = models.CharField(max_length=300, help_text="key:ID, user:ID, provider:NAME or alias:NAME")
    threshold = models.CharField(
        max_length=32, blank=True, help_text="METRIC:PERCENT of a quota alert, e.g. requests:80"
    )
    period_start = models.DateTimeField(help_text="The quota period, breaker episode or incident this alert is of")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    title = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    ongoing = models.BooleanField(default=False, help_text="An open breaker episode or alias incident")
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject", "threshold", "period_start"], name="alert_once_per_period"
            ),
            models.UniqueConstraint(fields=["kind", "subject"], condition=Q(ongoing=True), name="alert_one_ongoing"),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        self.title = self.title[:300]  # a 200-character key or alias name must not cost the alert
        super().save(*args, **kwargs)

    @property
    def group(self) -> str:
        return {"quota": QUOTA, "breaker_opened": BREAKER, "breaker_closed": BREAKER}.get(self.kind, ALIAS)


class AlertDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending (retrying)"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=[("email", "email"), ("webhook", "webhook")])
    # The address, or the webhook's name: never its URL (which may carry a token) or secret.
    target = models.CharField(max_length=300)
    webhook = models.ForeignKey(AlertWebhook, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.channel} to {self.target}: {self.status}"
