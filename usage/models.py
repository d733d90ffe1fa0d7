"""What happened: one RequestLog row per inference call, and the hourly rollup the usage pages read (SPEC §3, §8).

Rows are written only by `usage.writer` (batched, off the request path). Prompts and answers are never stored.
"""

from django.db import models
from django.utils import timezone


class RequestLog(models.Model):
    id = models.CharField(primary_key=True, max_length=64)  # the x-request-id
    created_at = models.DateTimeField(default=timezone.now)
    api_key = models.ForeignKey("apikeys.APIKey", null=True, blank=True, on_delete=models.SET_NULL,
                                db_constraint=False, related_name="+")
    key_prefix = models.CharField(max_length=16, blank=True)  # "master" for the master key, "" when unauthenticated
    requested_model = models.CharField(max_length=200, blank=True)
    alias = models.CharField(max_length=200, blank=True)
    policy = models.CharField(max_length=50, blank=True)
    tier = models.CharField(max_length=20, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    attempts = models.JSONField(default=list)
    fallback = models.BooleanField(default=False)  # answered by other than the first route tried
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self):
        return f"{self.id} {self.status}"

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens
