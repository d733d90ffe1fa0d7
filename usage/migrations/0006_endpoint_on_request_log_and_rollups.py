"""RequestLog and the rollups learn which API endpoint a call was made to (issue 12).

Every existing row was a chat completion (the only endpoint that wrote rows), so the default "chat" is the truth
for them, not a guess; the rollups' unique constraints gain the endpoint so usage can be split by it.
"""

from django.db import migrations, models

# Frozen here: the model's list may grow.
ENDPOINTS = [
    ("chat", "chat completions"),
    ("embeddings", "embeddings"),
    ("completions", "completions"),
    ("responses", "responses"),
    ("messages", "messages"),
    ("models", "models"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0005_count_admitted_and_rebuild_latency_buckets"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="usagedaily",
            name="usage_daily_unique",
        ),
        migrations.RemoveConstraint(
            model_name="usagehourly",
            name="usage_hourly_unique",
        ),
        migrations.AddField(
            model_name="requestlog",
            name="endpoint",
            field=models.CharField(
                choices=ENDPOINTS,
                default="chat",
                max_length=16,
                verbose_name="endpoint",
                help_text="The API endpoint called: chat is POST /v1/chat/completions.",
            ),
        ),
        migrations.AddField(
            model_name="usagedaily",
            name="endpoint",
            field=models.CharField(choices=ENDPOINTS, default="chat", max_length=16, verbose_name="endpoint"),
        ),
        migrations.AddField(
            model_name="usagehourly",
            name="endpoint",
            field=models.CharField(choices=ENDPOINTS, default="chat", max_length=16, verbose_name="endpoint"),
        ),
        migrations.AddConstraint(
            model_name="usagedaily",
            constraint=models.UniqueConstraint(
                fields=(
                    "day",
                    "api_key_id",
                    "key_prefix",
                    "alias",
                    "policy",
                    "tier",
                    "provider",
                    "upstream_model",
                    "status_class",
                    "endpoint",
                ),
                name="usage_daily_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="usagehourly",
            constraint=models.UniqueConstraint(
                fields=(
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
                ),
                name="usage_hourly_unique",
            ),
        ),
    ]
