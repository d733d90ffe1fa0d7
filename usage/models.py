"""What happened: one RequestLog row per inference call, and the hourly rollup the usage pages read (SPEC §3, §8).

Rows are written only by `usage.writer` (batched, off the request path); rollup rows only by `usage.rollups`, in
the same transaction. Prompts and answers are never stored. The pages read the rollups (`UsageDaily` for whole
days, `UsageHourly` for the hours around them) for every total, chart and percentile, and RequestLog only for the
row-by-row request log (keyset-paginated over an index).
"""

from django.db import models
from django.utils import timezone

# Upper edges (ms, exclusive) of the latency / time-to-first-token histogram buckets kept in the rollup. The last
# bucket is open-ended. Log-spaced from 1 ms, so a 3 ms answer reads as 3 ms and a 40 s one within ~25%; percentiles
# read from these are exact to within one bucket (see usage/reports.py).
LATENCY_BUCKET_EDGES_MS = (
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    7500,
    10000,
    20000,
    60000,
)
LATENCY_BUCKETS = len(LATENCY_BUCKET_EDGES_MS) + 1
LATENCY_FIELDS = tuple(f"lat_{i}" for i in range(LATENCY_BUCKETS))
TTFT_FIELDS = tuple(f"ttft_{i}" for i in range(LATENCY_BUCKETS))

# The API endpoint a call was made to (RequestLog.endpoint): which operation of the OpenAI API it asked for.
ENDPOINTS = (
    ("chat", "chat completions"),
    ("embeddings", "embeddings"),
    ("completions", "completions"),
    ("responses", "responses"),
    ("messages", "messages"),
    ("models", "models"),
)
DEFAULT_ENDPOINT = "chat"

# The dimensions one UsageHourly row is unique over, in the order of its unique constraint.
ROLLUP_DIMENSIONS = (
    "hour",
    "api_key_id",
    "key_prefix",
    "alias",
    "policy",
    "tier",
    "provider",
    "upstream_model",
    "status_class",
    "endpoint",
)
# The additive measures; every one of them is summed when rows are merged.
ROLLUP_MEASURES = (
    "requests",
    "admitted",
    "errors",
    "fallbacks",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "ttft_count",
    *LATENCY_FIELDS,
    *TTFT_FIELDS,
)


class RequestLog(models.Model):
    key_name: str  # not a column: the key's name, set on rows shown in the request log (reports.log_page)

    id = models.CharField(
        "request id", primary_key=True, max_length=64, help_text="The x-request-id the client was given."
    )
    created_at = models.DateTimeField("created at", default=timezone.now, help_text="When the request arrived.")
    api_key = models.ForeignKey(
        "apikeys.APIKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="+",
        verbose_name="API key",
    )
    key_prefix = models.CharField(
        "key prefix",
        max_length=16,
        blank=True,
        help_text='"master" for the master key, empty when authentication failed.',
    )
    endpoint = models.CharField(
        "endpoint",
        max_length=16,
        choices=ENDPOINTS,
        default=DEFAULT_ENDPOINT,
        help_text="The API endpoint called: chat is POST /v1/chat/completions.",
    )
    requested_model = models.CharField(
        "requested model", max_length=200, blank=True, help_text="The model name the client sent."
    )
    alias = models.CharField("alias", max_length=200, blank=True)
    policy = models.CharField("policy", max_length=50, blank=True)
    tier = models.CharField("tier", max_length=20, blank=True, help_text="Tier of the route that answered.")
    provider = models.CharField("provider", max_length=100, blank=True)
    upstream_model = models.CharField("upstream model", max_length=200, blank=True)
    status = models.PositiveSmallIntegerField("HTTP status")
    error_code = models.CharField("error code", max_length=64, blank=True)
    admitted = models.BooleanField(
        "admitted",
        default=False,
        help_text="The call passed authentication, validation and the limits (rate limits, quotas); only admitted "
        "calls count against a quota.",
    )
    synthetic = models.BooleanField(
        "synthetic",
        default=False,
        help_text="Written by `manage.py usage generate` for demos and benchmarks, not by real traffic.",
    )
    stream = models.BooleanField("stream", default=False, help_text="The client asked for a streamed answer.")
    latency_ms = models.PositiveIntegerField(
        "latency (ms)", default=0, help_text="From receipt of the request to the end of the answer."
    )
    ttft_ms = models.PositiveIntegerField("time to first token (ms)", null=True, blank=True, help_text="Streams only.")
    prompt_tokens = models.PositiveIntegerField("prompt tokens", default=0)
    completion_tokens = models.PositiveIntegerField("completion tokens", default=0)
    usage_estimated = models.BooleanField(
        "usage estimated", default=False, help_text="The upstream reported no usage; tokens were estimated."
    )
    cost_usd = models.DecimalField("cost (USD)", max_digits=14, decimal_places=8, default=0)
    attempts = models.JSONField("upstream attempts", default=list)
    fallback = models.BooleanField("fallback", default=False, help_text="Answered by other than the first route tried.")
    client_ip = models.GenericIPAddressField("client IP", null=True, blank=True)
    user_agent = models.CharField("user agent", max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["status", "created_at"]),
            # The request log's "errors only" view walks this small partial index newest-first.
            models.Index(fields=["created_at"], condition=models.Q(status__gte=400), name="usage_log_errors_idx"),
        ]

    def __str__(self):
        return f"{self.id} {self.status}"

    @property
    def total_tokens(self):
        return self.prompt_tokens + self.completion_tokens


class UsageRollup(models.Model):
    """Request-log rows summed per time bucket and per (key, alias, policy, tier, provider, model, status class,
    endpoint).

    `api_key_id` is 0 for rows without a key (the master key, told apart by `key_prefix` "master", and failed
    authentications), because NULLs never conflict in a unique constraint and the upsert relies on conflicts.
    `lat_<i>` / `ttft_<i>` count requests whose latency / time to first token fell in bucket i of
    LATENCY_BUCKET_EDGES_MS; `ttft_count` is how many requests had a TTFT at all; `admitted` how many passed the
    limits (RequestLog.admitted), which is what a quota counts.
    """

    api_key_id = models.BigIntegerField(
        "API key id", default=0, help_text="0 for the master key and failed authentications."
    )
    key_prefix = models.CharField("key prefix", max_length=16, blank=True)
    alias = models.CharField("alias", max_length=200, blank=True)
    policy = models.CharField("policy", max_length=50, blank=True)
    tier = models.CharField("tier", max_length=20, blank=True)
    provider = models.CharField("provider", max_length=100, blank=True)
    upstream_model = models.CharField("upstream model", max_length=200, blank=True)
    status_class = models.PositiveSmallIntegerField("status class", help_text="HTTP status // 100: 2, 4 or 5.")
    endpoint = models.CharField("endpoint", max_length=16, choices=ENDPOINTS, default=DEFAULT_ENDPOINT)
    requests = models.BigIntegerField("requests", default=0)
    admitted = models.BigIntegerField(
        "admitted requests", default=0, help_text="Requests that passed the limits: what quotas count."
    )
    errors = models.BigIntegerField("errors", default=0, help_text="Requests answered with status >= 400.")
    fallbacks = models.BigIntegerField("fallbacks", default=0)
    prompt_tokens = models.BigIntegerField("prompt tokens", default=0)
    completion_tokens = models.BigIntegerField("completion tokens", default=0)
    cost_usd = models.DecimalField("cost (USD)", max_digits=18, decimal_places=8, default=0)
    ttft_count = models.BigIntegerField("requests with a first token", default=0)

    class Meta:
        abstract = True


class UsageHourly(UsageRollup):
    """The rollup per UTC hour: what partial days, hourly charts and today's quotas read."""

    hour = models.DateTimeField("hour (UTC)")

    class Meta:
        verbose_name = "hourly usage rollup"
        constraints = [models.UniqueConstraint(fields=list(ROLLUP_DIMENSIONS), name="usage_hourly_unique")]
        indexes = [models.Index(fields=["api_key_id", "hour"], name="usage_hourly_key_idx")]

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H}h {self.alias} {self.provider} {self.status_class}xx: {self.requests}"


class UsageDaily(UsageRollup):
    """The same rollup per UTC day (`day` is its midnight): whole days of long periods read this, ~20x fewer
    rows than the hourly table. Maintained alongside UsageHourly by usage.rollups."""

    day = models.DateTimeField("day (UTC midnight)")

    class Meta:
        verbose_name = "daily usage rollup"
        constraints = [models.UniqueConstraint(fields=["day", *ROLLUP_DIMENSIONS[1:]], name="usage_daily_unique")]
        indexes = [models.Index(fields=["api_key_id", "day"], name="usage_daily_key_idx")]

    def __str__(self):
        return f"{self.day:%Y-%m-%d} {self.alias} {self.provider} {self.status_class}xx: {self.requests}"


# The histogram columns are written out by a loop rather than by hand: 32 identical counters, one per bucket.
def _bucket_label(i: int) -> str:
    lower = LATENCY_BUCKET_EDGES_MS[i - 1] if i else 0
    return f"{lower}-{LATENCY_BUCKET_EDGES_MS[i]} ms" if i < len(LATENCY_BUCKET_EDGES_MS) else f">= {lower} ms"


for _model in (UsageHourly, UsageDaily):
    for _i in range(LATENCY_BUCKETS):
        _model.add_to_class(LATENCY_FIELDS[_i], models.BigIntegerField(f"latency {_bucket_label(_i)}", default=0))
        _model.add_to_class(
            TTFT_FIELDS[_i], models.BigIntegerField(f"time to first token {_bucket_label(_i)}", default=0)
        )
del _model, _i
