"""The request log in the admin: read-only (rows are written only by usage.writer), filterable, searchable by
request id or key prefix. Nobody adds, edits or deletes log rows here.

The table may hold millions of rows, so the list never counts the whole table (`show_full_result_count`), and
no filter lists its choices with a DISTINCT over the log: they come from the routing tables or fixed sets.

The list shows what an operator scans for first (when, status, error, latency) ahead of where the call went, and
fits a 1280 px screen: the request id is cut to its first characters (the full id is the link's tooltip and on the
row's page), the upstream model is the provider's tooltip, and the requested model, policy, stream flag and time
to first token are left to the row's page and the filters.
"""

import json
from datetime import UTC

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from routing.models import Alias, Policy, Provider
from routing.tiers import TIERS
from usage.models import RequestLog

# Characters of the request id shown in the list: enough to tell rows apart at a glance. Search takes the full id,
# which the tooltip and the row's page show.
SHORT_ID = 8


class ChoicesFilter(admin.SimpleListFilter):
    """Filter on one column, with choices from `choices()` (a few rows), never from the log itself."""

    parameter_name: str  # every subclass names its column

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.values()]

    def values(self):
        raise NotImplementedError

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class TierFilter(ChoicesFilter):
    title = parameter_name = "tier"

    def values(self):
        return TIERS


class ProviderFilter(ChoicesFilter):
    title = parameter_name = "provider"

    def values(self):
        return Provider.objects.values_list("name", flat=True)


class AliasFilter(ChoicesFilter):
    title = parameter_name = "alias"

    def values(self):
        return Alias.objects.values_list("name", flat=True)


class PolicyFilter(ChoicesFilter):
    title = parameter_name = "policy"

    def values(self):
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
    list_display = [
        "short_id",
        "when",
        "status_code",
        "error",
        "latency",
        "total_tokens",
        "cost",
        "key",
        "alias_name",
        "route",
    ]
    list_filter = [
        StatusFilter,
        "endpoint",
        TierFilter,
        ProviderFilter,
        AliasFilter,
        PolicyFilter,
        "stream",
        "created_at",
    ]
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

    @admin.display(description="request", ordering="id")
    def short_id(self, obj):
        shown = obj.id if len(obj.id) <= SHORT_ID else obj.id[:SHORT_ID] + "…"
        return format_html('<span title="{}">{}</span>', obj.id, shown)

    @admin.display(description="time (UTC)", ordering="created_at")
    def when(self, obj):
        return timezone.localtime(obj.created_at, UTC).strftime("%m-%d %H:%M")

    @admin.display(description="status", ordering="status")
    def status_code(self, obj):
        return obj.status

    @admin.display(description="error")
    def error(self, obj):
        return obj.error_code or "-"

    @admin.display(description="latency ms", ordering="latency_ms")
    def latency(self, obj):
        return f"{obj.latency_ms:,}"

    @admin.display(description="key")
    def key(self, obj):
        return obj.key_prefix or "-"

    @admin.display(description="alias")
    def alias_name(self, obj):
        return obj.alias or "-"

    @admin.display(description="tier · provider")
    def route(self, obj):
        if not obj.provider:
            return "-"
        return format_html('<span title="{}">{} · {}</span>', obj.upstream_model, obj.tier, obj.provider)

    @admin.display(description="tokens")
    def total_tokens(self, obj):
        return f"{obj.total_tokens:,}"

    @admin.display(description="cost $")
    def cost(self, obj):
        return f"{obj.cost_usd:.4f}" if obj.cost_usd else "0"

    @admin.display(description="attempts")
    def attempts_table(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.attempts, indent=2, ensure_ascii=False))
