"""The request log in the admin: read-only (rows are written only by usage.writer), filterable, searchable by
request id or key prefix. Nobody adds, edits or deletes log rows here.

The table may hold millions of rows, so the list never counts the whole table (`show_full_result_count`), and
no filter lists its choices with a DISTINCT over the log: they come from the routing tables or fixed sets.
"""

import json

from django.contrib import admin
from django.utils.html import format_html

from usage.models import RequestLog


class ChoicesFilter(admin.SimpleListFilter):
    """Filter on one column, with choices from `choices()` (a few rows), never from the log itself."""

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.values()]

    def values(self):
        raise NotImplementedError

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class TierFilter(ChoicesFilter):
    title = parameter_name = "tier"

    def values(self):
        from routing.models import TIERS

        return TIERS


class ProviderFilter(ChoicesFilter):
    title = parameter_name = "provider"

    def values(self):
        from routing.models import Provider

        return Provider.objects.values_list("name", flat=True)


class AliasFilter(ChoicesFilter):
    title = parameter_name = "alias"

    def values(self):
        from routing.models import Alias

        return Alias.objects.values_list("name", flat=True)


class PolicyFilter(ChoicesFilter):
    title = parameter_name = "policy"

    def values(self):
        from routing.models import Policy

        return Policy.objects.values_list("name", flat=True)


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"

    def lookups(self, request, model_admin):
        return [("2", "2xx success"), ("4", "4xx rejected"), ("5", "5xx failed"), ("errors", "all errors")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "errors":
            return queryset.filter(status__gte=400)
        if value in ("2", "4", "5"):
            return queryset.filter(status__gte=int(value) * 100, status__lt=int(value) * 100 + 100)
        return queryset


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "key_prefix", "requested_model", "alias", "policy", "tier", "provider",
                    "upstream_model", "status", "error_code", "stream", "latency_ms", "ttft_ms", "total_tokens",
                    "cost_usd"]
    list_filter = [StatusFilter, TierFilter, ProviderFilter, AliasFilter, PolicyFilter, "stream", "created_at"]
    search_fields = ["=id", "=key_prefix", "=error_code"]
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
