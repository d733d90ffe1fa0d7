"""The admin for API keys and their quotas.

Adding a key generates it (apikeys.services.apikey_assign_secret) and shows the full key exactly once, in the
message after saving; afterwards only its prefix is ever displayed, because only the prefix and an HMAC are stored.
Keys are revoked (kept for the request log), not edited back to life.
"""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apikeys.models import APIKey, Quota
from apikeys.services import apikey_assign_secret, apikey_revoke


class NameListField(forms.CharField):
    """A JSON list of names edited as "a, b, c"; empty means all."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value):
        return [name.strip() for name in (value or "").split(",") if name.strip()]


class APIKeyForm(forms.ModelForm):
    allowed_aliases = NameListField(required=False, help_text="Comma-separated alias names; empty = all aliases.")
    allowed_policies = NameListField(required=False, help_text="Comma-separated policy names; empty = all policies.")

    class Meta:
        model = APIKey
        fields = ["name", "owner", "expires_at", "allowed_aliases", "allowed_policies", "default_policy",
                  "rpm_limit", "tpm_limit", "max_concurrent"]


class QuotaInline(admin.TabularInline):
    model = Quota
    extra = 0
    fields = ["period", "max_requests", "max_tokens", "max_cost_usd"]


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


def key_status(api_key: APIKey) -> str:
    if api_key.is_revoked:
        return "revoked"
    if api_key.is_expired():
        return "expired"
    return "active"


def usage_table(usage: dict):
    """apikeys.limits.usage_for_key_sync as a small read-only table."""
    def cell(used, maximum):
        return "-" if used is None else (f"{used:g} of {maximum:g}" if maximum is not None else f"{used:g}")

    rows = []
    current = usage["current"]
    if current is not None:
        limits = usage["limits"]
        rows += [("requests this minute", cell(current["requests_this_minute"], limits["rpm_limit"])),
                 ("tokens this minute", cell(current["tokens_this_minute"], limits["tpm_limit"])),
                 ("in flight", cell(current["in_flight"], limits["max_concurrent"]))]
    for quota in usage["quotas"]:
        for metric in ("requests", "tokens", "cost"):
            rows.append((f"{metric} this {quota['period']} (resets {quota['resets_at']:%Y-%m-%d %H:%M} UTC)",
                         cell(quota[metric]["used"], quota[metric]["max"])))
    rows.append(("last used", str(usage["last_used_at"] or "never")))
    if usage["shared_state_error"]:
        rows.append(("shared state", f"unreachable ({usage['shared_state_error']}); quota usage from the log"))
    return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    form = APIKeyForm
    inlines = [QuotaInline]
    list_display = ["name", "prefix", "owner", "status", "rpm_limit", "tpm_limit", "max_concurrent", "quota_summary",
                    "created_at", "expires_at", "last_used_at"]
    list_filter = [StatusFilter, "created_at"]
    search_fields = ["name", "prefix", "owner__username"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    actions = ["revoke_keys"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("quotas")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["prefix", "status", "created_at", "last_used_at", "revoked_at", "usage_now"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "owner", "expires_at"]}),
            ("Access", {"fields": ["allowed_aliases", "allowed_policies", "default_policy"]}),
            ("Rate limits (empty = unlimited)", {"fields": ["rpm_limit", "tpm_limit", "max_concurrent"]}),
        ]
        if obj is not None:
            fieldsets.insert(1, ("Key", {"fields": ["prefix", "status", "created_at", "last_used_at", "revoked_at"],
                                         "description": "Only the prefix is stored in readable form; the full key "
                                                        "was shown once, when it was created."}))
            fieldsets.append(("Usage now", {"fields": ["usage_now"]}))
        return fieldsets

    @admin.display(description="usage against limits and quotas")
    def usage_now(self, obj):
        from apikeys.limits import usage_for_key_sync

        return usage_table(usage_for_key_sync(obj.pk))

    @admin.display(description="status")
    def status(self, obj):
        return key_status(obj)

    @admin.display(description="quotas")
    def quota_summary(self, obj):
        parts = []
        for quota in obj.quotas.all():
            limits = [f"{quota.max_requests} req" if quota.max_requests is not None else "",
                      f"{quota.max_tokens} tok" if quota.max_tokens is not None else "",
                      f"${quota.max_cost_usd}" if quota.max_cost_usd is not None else ""]
            parts.append(f"{'/'.join(p for p in limits if p)} per {quota.period}")
        return "; ".join(parts) or "-"

    def save_model(self, request, obj, form, change):
        if not change:
            full_key = apikey_assign_secret(api_key=obj)
            obj.save()
            # The only time the full key exists outside the client's hands: it is not stored anywhere.
            self.message_user(request, format_html(
                "API key “{}” created. Copy it now, it will not be shown again: <code>{}</code>", obj.name, full_key,
            ), messages.SUCCESS)
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        revoked = 0
        with transaction.atomic():
            for api_key in queryset.filter(revoked_at__isnull=True):
                apikey_revoke(api_key=api_key)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s); they stop working within seconds.")
