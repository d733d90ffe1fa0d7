"""The request log in the admin: read-only (rows are written only by usage.writer), filterable, searchable by
request id or key prefix. Nobody adds, edits or deletes log rows here.

The table may hold millions of rows, so the list never counts the whole table (`show_full_result_count`).
"""

import json

from django.contrib import admin
from django.utils.html import format_html

from usage.models import RequestLog


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "key_prefix", "requested_model", "alias", "policy", "tier", "provider",
                    "upstream_model", "status", "error_code", "stream", "latency_ms", "ttft_ms", "total_tokens",
                    "cost_usd"]
    list_filter = ["status", "tier", "provider", "alias", "policy", "stream", "error_code", "created_at"]
    search_fields = ["=id", "=key_prefix"]
    ordering = ["-created_at"]
    show_full_result_count = False
    list_per_page = 50
    exclude = ["attempts"]
    readonly_fields = ["attempts_table"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="tokens")
    def total_tokens(self, obj):
        return obj.total_tokens

    @admin.display(description="attempts")
    def attempts_table(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.attempts, indent=2, ensure_ascii=False))
