"""The admin for API keys and their quotas, and for the limits a user's keys share (UserLimits + UserQuota).

Adding a key generates it (apikeys.services.apikey_assign_secret) and shows the full key exactly once, on the
page after saving; afterwards only its prefix is ever displayed, because only the prefix and an HMAC are stored.
The full key never travels in a cookie: it waits for that one page in the server-side session (database-backed),
not in `messages` (whose default storage is a signed but readable cookie), and is deleted as it is shown.
Keys are revoked (kept for the request log), not edited back to life: the change page has a Revoke button, the
list a "Revoke selected keys" action. Every change is recorded in the audit trail, without the key's HMACs
(audit/history.py); each object's History page shows who changed what.
"""

from datetime import UTC
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.sessions.backends.signed_cookies import SessionStore as CookieSessionStore
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apikeys.models import APIKey, Quota, UserKeyCaps, UserLimits, UserQuota
from apikeys.services import apikey_assign_secret, apikey_revoke
from audit.pages import HistoryAdmin
from limits.selectors import usage_for_key_sync
from routing.models import Alias, Policy

# The session entry holding a just-created key until the next admin page shows it (and deletes it).
NEW_KEY_SESSION = "apikeys_admin_new_key"


class NameChoiceField(forms.MultipleChoiceField):
    """A JSON list of alias or policy names, ticked from the names that exist; none ticked means all.

    Any posted name is let through to the model's clean(), which is what refuses names that do not exist (with the
    same message as `apikey create`); a stored name whose alias has since been deleted is offered, ticked, so the
    operator sees it and unticks it rather than losing it silently."""

    widget = forms.CheckboxSelectMultiple

    def to_python(self, value):
        return [name for name in super().to_python(value) if name.strip()]

    def valid_value(self, value):
        return True


class APIKeyForm(forms.ModelForm):
    allowed_aliases = NameChoiceField(
        required=False, label="Allowed aliases", help_text="Aliases this key may call. None ticked: all."
    )
    allowed_policies = NameChoiceField(
        required=False, label="Allowed policies", help_text="Policies this key may ask for. None ticked: all."
    )

    class Meta:
        model = APIKey
        fields = [
            "name",
            "owner",
            "expires_at",
            "allowed_aliases",
            "allowed_policies",
            "default_policy",
            "rpm_limit",
            "tpm_limit",
            "max_concurrent",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field_name, names in (
            ("allowed_aliases", Alias.objects.values_list("name", flat=True)),
            ("allowed_policies", Policy.objects.values_list("name", flat=True)),
        ):
            choices = list(names)
            stale = [n for n in (getattr(self.instance, field_name, None) or []) if n not in choices]
            field = self.fields[field_name]
            assert isinstance(field, NameChoiceField)
            field.choices = [(n, n) for n in choices] + [(n, f"{n} (no longer exists)") for n in stale]


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


def amount(value, grouped=True) -> str:
    """2,000,000 (or 2000000) rather than 2e+06; 25 rather than 25.000000; money to at most four decimals."""
    sep = "," if grouped else ""
    if isinstance(value, int):
        return f"{value:{sep}}"
    return f"{value:{sep}.4f}".rstrip("0").rstrip(".")


def usage_table(usage: dict):
    """limits.selectors.usage_for_key_sync as a small read-only table."""

    def cell(used, maximum):
        if used is None:
            return "-"
        used = amount(used, grouped=False)
        return f"{used} of {amount(maximum, grouped=False)}" if maximum is not None else used

    rows = []
    current = usage["current"]
    if current is not None:
        limits = usage["limits"]
        rows += [
            ("requests this minute", cell(current["requests_this_minute"], limits["rpm_limit"])),
            ("tokens this minute", cell(current["tokens_this_minute"], limits["tpm_limit"])),
            ("in flight", cell(current["in_flight"], limits["max_concurrent"])),
        ]
    for quota in usage["quotas"]:
        for metric in ("requests", "tokens", "cost"):
            rows.append(
                (
                    f"{metric} this {quota['period']} (resets {quota['resets_at']:%Y-%m-%d %H:%M} UTC)",
                    cell(quota[metric]["used"], quota[metric]["max"]),
                )
            )
    rows.append(("last used (UTC)", short_time(usage["last_used_at"], "never")))
    if usage["shared_state_error"]:
        rows.append(("shared state", f"unreachable ({usage['shared_state_error']}); quota usage from the log"))
    return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))


@admin.register(APIKey)
class APIKeyAdmin(HistoryAdmin):
    history_children = (("apikeys.quota", "api_key"),)
    form = APIKeyForm
    inlines = [QuotaInline]
    list_display = ["name", "prefix", "status", "limits", "quota_summary", "last_used", "owner", "expires"]
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
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": ["name", "owner", "expires_at"]}),
            ("Access", {"fields": ["allowed_aliases", "allowed_policies", "default_policy"]}),
            ("Rate limits (empty = unlimited)", {"fields": ["rpm_limit", "tpm_limit", "max_concurrent"]}),
        ]
        if obj is not None:
            fieldsets.insert(
                1,
                (
                    "Key",
                    {
                        "fields": ["prefix", "status", "created_at", "last_used_at", "revoked_at"],
                        "description": "Only the prefix is stored in readable form; the full key "
                        "was shown once, when it was created.",
                    },
                ),
            )
            fieldsets.append(("Usage now", {"fields": ["usage_now"]}))
        return fieldsets

    @admin.display(description="usage against limits and quotas")
    def usage_now(self, obj):
        return usage_table(usage_for_key_sync(obj.pk))

    @admin.display(description="status")
    def status(self, obj):
        return obj.status

    @admin.display(description="per-minute limits")
    def limits(self, obj):
        parts = [
            f"{obj.rpm_limit:,} rpm" if obj.rpm_limit else "",
            f"{obj.tpm_limit:,} tpm" if obj.tpm_limit else "",
            f"{obj.max_concurrent} at once" if obj.max_concurrent else "",
        ]
        return " · ".join(p for p in parts if p) or "unlimited"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj):
        return short_time(obj.last_used_at, "never")

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj):
        return short_time(obj.expires_at, "never")

    @admin.display(description="quotas")
    def quota_summary(self, obj):
        parts = []
        for quota in obj.quotas.all():
            limits = [
                f"{amount(quota.max_requests)} req" if quota.max_requests is not None else "",
                f"{amount(quota.max_tokens)} tok" if quota.max_tokens is not None else "",
                f"${amount(quota.max_cost_usd)}" if quota.max_cost_usd is not None else "",
            ]
            parts.append(f"{' / '.join(p for p in limits if p)} per {quota.period}")
        return "; ".join(parts) or "-"

    def save_model(self, request, obj, form, change):
        if not change:
            # The only time the full key exists outside the client's hands. It waits server-side for the next page
            # (never in a cookie: see the module docstring) and is deleted when shown.
            if isinstance(request.session, CookieSessionStore):
                raise PermissionDenied(
                    "API keys cannot be created while sessions are stored in cookies: the new "
                    "key would travel in one. Use a server-side SESSION_ENGINE."
                )
            full_key = apikey_assign_secret(api_key=obj)
            obj.save()
            # Django's own "was added successfully" message follows; the key itself is in the page's banner.
            request.session[NEW_KEY_SESSION] = {"name": obj.name, "key": full_key}
            return
        super().save_model(request, obj, form, change)

    def _pop_new_key(self, request, extra_context):
        """Take a just-created key out of the session for this page to show, once."""
        extra_context = dict(extra_context or {})
        new_key = request.session.pop(NEW_KEY_SESSION, None)
        if new_key:
            extra_context["new_key"] = new_key
        return extra_context

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, self._pop_new_key(request, extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "GET":
            extra_context = self._pop_new_key(request, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        revoke = path(
            "<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name="apikeys_apikey_revoke"
        )
        return [revoke, *super().get_urls()]

    def revoke_view(self, request, object_id):
        """The change page's Revoke button: a confirmation page (GET), then the revocation (POST, CSRF-checked)."""
        api_key = get_object_or_404(APIKey, pk=object_id)
        if not self.has_change_permission(request, api_key):
            raise PermissionDenied
        change_url = reverse("admin:apikeys_apikey_change", args=[api_key.pk])
        if api_key.is_revoked:
            self.message_user(
                request,
                f"API key “{api_key.name}” ({api_key.prefix}…) was already revoked at "
                f"{short_time(api_key.revoked_at)} UTC.",
                messages.WARNING,
            )
            return redirect(change_url)
        if request.method == "POST":
            apikey_revoke(api_key=api_key)
            who = request.user.get_username()
            when = short_time(api_key.revoked_at)
            self.log_change(request, api_key, "Revoked.")
            self.message_user(
                request,
                f"API key “{api_key.name}” ({api_key.prefix}…) revoked by {who} at {when} "
                f"UTC; it stops working within seconds.",
                messages.SUCCESS,
            )
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke this API key?",
            "opts": self.opts,
            "original": api_key,
            "api_key": api_key,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/apikeys/apikey/revoke_confirmation.html", context)

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        revoked = []
        with transaction.atomic():
            for api_key in queryset.filter(revoked_at__isnull=True):
                apikey_revoke(api_key=api_key)
                self.log_change(request, api_key, "Revoked.")
                revoked.append(f"{api_key.prefix}…")
        self.message_user(
            request,
            f"Revoked {len(revoked)} key(s) ({', '.join(revoked) or 'none'}); they stop working within seconds.",
        )


@admin.register(UserKeyCaps)
class UserKeyCapsAdmin(HistoryAdmin):
    """What plain users may give themselves on the usage pages (docs/users.md); the row without a user is the
    default for everyone without their own."""

    list_display = ["__str__", "max_keys", "max_rpm", "max_tpm", "max_concurrent", "max_rotation_grace_hours"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    fieldsets = [
        (None, {"fields": ["user", "max_keys", "max_rotation_grace_hours"]}),
        ("Per-key limits", {"fields": ["max_rpm", "max_tpm", "max_concurrent"]}),
        (
            "Per-key quotas",
            {
                "fields": [
                    ("max_requests_per_day", "max_requests_per_month"),
                    ("max_tokens_per_day", "max_tokens_per_month"),
                    ("max_cost_usd_per_day", "max_cost_usd_per_month"),
                ]
            },
        ),
        ("What keys may call", {"fields": ["allowed_aliases", "allowed_policies"]}),
    ]


def short_time(value, empty="-") -> str:
    return timezone.localtime(value, UTC).strftime("%Y-%m-%d %H:%M") if value else empty


# --- a user's limits (issue 14): shared by all the user's keys, on top of each key's own ---------------------------


class UserQuotaInline(admin.TabularInline):
    model = UserQuota
    extra = 0
    max_num = 2  # one per period


@admin.register(UserLimits)
class UserLimitsAdmin(HistoryAdmin):
    history_children = (("apikeys.userquota", "user_limits"),)
    list_display = ("user", "rpm_limit", "tpm_limit", "max_concurrent", "quota_summary")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    inlines = [UserQuotaInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("quotas")

    @admin.display(description="quotas")
    def quota_summary(self, obj):
        parts = []
        for quota in obj.quotas.all():
            for label, maximum in (
                ("requests", quota.max_requests),
                ("tokens", quota.max_tokens),
                ("USD", quota.max_cost_usd),
            ):
                if maximum is not None:
                    parts.append(f"{maximum.normalize() if label == 'USD' else maximum} {label}/{quota.period}")
        return ", ".join(parts) or "-"
