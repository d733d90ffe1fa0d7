"""The admin for routing configuration: providers, aliases with their routes, policies, and the routing settings.

Every save here bumps the shared config version (routing/signals.py), so each worker serves the change within
seconds, and is recorded in the audit trail: each object's History page shows who changed what (audit/pages.py).
A provider's secret is never shown: only whether its environment variable is set in this process.
ConfigVersion is internal bookkeeping and deliberately not registered.

The list columns are chosen to fit a 1280 px screen with the key ones (secret set, enabled, breaker) first;
templates/admin/base_site.html adds static/rainymodel/admin.css and the link to the usage pages.
"""

import os
import time

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count
from django.shortcuts import redirect
from django.urls import reverse

from audit.pages import HistoryAdmin
from rainymodel_site.shared_state import SharedStateUnavailable
from routing import breakers
from routing.models import Alias, Endpoint, Policy, Provider, Route, RoutingSettings
from routing.tiers import TIERS

admin.site.site_header = "RainyModel administration"
admin.site.site_title = "RainyModel administration"
admin.site.index_title = "Providers, aliases, policies, keys and the request log"
# "View site" leads to the site's landing page; the header's "Usage" link (templates/admin/base_site.html) to /usage/.
admin.site.site_url = "/"
# The navigation sidebar repeats the index and takes a quarter of a laptop screen from the tables; the breadcrumbs
# and the index lead everywhere it did.
admin.site.enable_nav_sidebar = False


def secret_is_set(provider: Provider) -> bool | None:
    """True/False for whether the provider's secret variable is set here; None when it names none."""
    if not provider.api_key_env:
        return None
    return bool(os.environ.get(provider.api_key_env))


def provider_breaker_text(provider: Provider, route_ids) -> str:
    """The provider's own breaker, plus how many of its routes' breakers are not closed: a provider can read
    "closed" while every route through it is out ("closed · 1 route open")."""
    text = breakers.breaker_text_sync(provider=provider.name)
    if text.startswith("unknown") or not route_ids:
        return text
    try:
        states = breakers.states_sync([breakers.route_key(route_id) for route_id in route_ids])
    except SharedStateUnavailable:
        return f"{text} · routes unknown"
    now = time.time()
    counts = {breakers.OPEN: 0, breakers.HALF_OPEN: 0}
    for st in states.values():
        current = breakers.status_at(st, now)
        if current in counts:
            counts[current] += 1
    parts = [
        f"{n} route{'s' if n > 1 else ''} {'open' if status == breakers.OPEN else 'half-open'}"
        for status, n in counts.items()
        if n
    ]
    return " · ".join([text, *parts])


@admin.register(Provider)
class ProviderAdmin(HistoryAdmin):
    list_display = ["name", "tier", "kind", "enabled", "secret_set", "breaker", "base_url"]
    list_filter = ["tier", "kind", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["secret_status", "breaker"]
    actions = ["enable_providers", "disable_providers", "reset_breakers"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "tier", "enabled"]}),
        (
            "Connection",
            {
                "fields": ["base_url", "api_key_env", "secret_status", "extra_headers"],
                "description": "The secret itself lives only in the server's environment, never in the database.",
            },
        ),
        (
            "Timeouts (seconds)",
            {
                "fields": ["connect_timeout_s", "first_token_timeout_s", "idle_timeout_s", "request_timeout_s"],
            },
        ),
        (
            "Retries and circuit breaker",
            {
                "fields": ["max_retries", "breaker_failures", "breaker_cooldown_s", "credit_cooldown_s", "breaker"],
            },
        ),
    ]

    @admin.display(boolean=True, description="secret set")
    def secret_set(self, obj):
        return secret_is_set(obj)

    @admin.display(description="secret")
    def secret_status(self, obj):
        if obj is None or not obj.api_key_env:
            return "No environment variable named: requests are sent without an API key."
        if secret_is_set(obj):
            return f"{obj.api_key_env} is set in this server's environment."
        return f"{obj.api_key_env} is NOT set in this server's environment: requests will be sent without a key."

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("routes")

    @admin.display(description="breaker")
    def breaker(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        return provider_breaker_text(obj, [route.pk for route in obj.routes.all()])

    @admin.action(description="Reset breaker (the provider's and its routes')")
    def reset_breakers(self, request, queryset):
        for provider in queryset:
            breakers.reset_sync(provider=provider.name)
            for route_id in provider.routes.values_list("id", flat=True):
                breakers.reset_sync(route_id=route_id)
        self.message_user(request, f"Breakers of {queryset.count()} provider(s) and their routes reset (closed).")

    @admin.action(description="Enable selected providers")
    def enable_providers(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected providers")
    def disable_providers(self, request, queryset):
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request, queryset, enabled):
        # save() per object, not update(): the save signal is what tells every worker.
        with transaction.atomic():
            for provider in queryset:
                provider.enabled = enabled
                provider.save(update_fields=["enabled"])
        self.message_user(request, f"{queryset.count()} provider(s) {'enabled' if enabled else 'disabled'}.")


class RouteForm(forms.ModelForm):
    """A route's endpoints as checkboxes (none ticked: every endpoint) rather than raw JSON."""

    endpoints = forms.MultipleChoiceField(
        choices=Endpoint.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="endpoints",
        help_text="What the upstream serves for this model; none ticked: every endpoint.",
    )

    class Meta:
        model = Route
        fields = "__all__"


class RouteInline(admin.TabularInline):
    model = Route
    form = RouteForm
    extra = 1
    ordering = ["position", "id"]
    # What an operator checks first (where it goes, is it on, is its breaker open) before how it is weighed and
    # priced; the narrow inputs come from static/rainymodel/admin.css.
    fields = [
        "provider",
        "upstream_model",
        "tier",
        "enabled",
        "breaker",
        "position",
        "weight",
        "context_window",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "supports_prefill",
        "endpoints",
    ]
    readonly_fields = ["tier", "breaker"]
    autocomplete_fields = ["provider"]

    @admin.display(description="tier")
    def tier(self, obj):
        if obj is None or obj.provider_id is None:
            return "-"
        return obj.provider.tier if obj.provider.enabled else f"{obj.provider.tier} (provider disabled)"

    @admin.display(description="breaker")
    def breaker(self, obj):
        return breakers.breaker_text_sync(route_id=obj.pk) if obj and obj.pk else "-"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("provider")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # Four add/change/delete/view icons under every row's provider double the table's height; providers are
        # edited on their own page.
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "provider" and field is not None:
            widget = field.widget
            widget.can_add_related = widget.can_change_related = widget.can_delete_related = False
            widget.can_view_related = False
        return field


@admin.register(Alias)
class AliasAdmin(HistoryAdmin):
    history_children = (("routing.route", "alias"),)
    list_display = ["name", "enabled", "listed", "default_policy", "route_count", "description"]
    list_filter = ["enabled", "listed", "default_policy"]
    search_fields = ["name", "description"]
    inlines = [RouteInline]
    fields = ["name", "description", "enabled", "listed", "default_policy"]
    actions = ["reset_route_breakers"]

    @admin.action(description="Reset breaker of the selected aliases' routes")
    def reset_route_breakers(self, request, queryset):
        route_ids = list(Route.objects.filter(alias__in=queryset).values_list("id", flat=True))
        for route_id in route_ids:
            breakers.reset_sync(route_id=route_id)
        self.message_user(request, f"Breakers of {len(route_ids)} route(s) reset (closed).")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("default_policy").annotate(route_total=Count("routes"))

    @admin.display(description="routes", ordering="route_total")
    def route_count(self, obj):
        return obj.route_total


class PolicyForm(forms.ModelForm):
    """Tiers typed as "free, internal, premium" rather than as raw JSON."""

    tiers = forms.CharField(
        help_text=f"Comma-separated, in the order they are tried; a tier not listed is never used. "
        f"Tiers: {', '.join(TIERS)}.",
    )

    class Meta:
        model = Policy
        fields = ["name", "description", "tiers", "is_default"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and isinstance(self.instance.tiers, list):
            self.initial["tiers"] = ", ".join(self.instance.tiers)

    def clean_tiers(self):
        return [t.strip().lower() for t in self.cleaned_data["tiers"].split(",") if t.strip()]


@admin.register(Policy)
class PolicyAdmin(HistoryAdmin):
    form = PolicyForm
    list_display = ["name", "tier_order", "is_default", "description"]
    search_fields = ["name"]
    actions = ["make_default"]

    @admin.display(description="tiers")
    def tier_order(self, obj):
        return " → ".join(obj.tiers or [])

    @admin.action(description="Make the selected policy the default")
    def make_default(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one policy to make the default.", messages.ERROR)
            return
        chosen = queryset.get()
        with transaction.atomic():
            for policy in Policy.objects.filter(is_default=True).exclude(pk=chosen.pk):
                policy.is_default = False
                policy.save(update_fields=["is_default"])
            chosen.is_default = True
            chosen.save(update_fields=["is_default"])
        self.message_user(request, f"{chosen.name} is now the default policy.")


@admin.register(RoutingSettings)
class RoutingSettingsAdmin(HistoryAdmin):
    """A single row: the list page goes straight to its form."""

    fields = ["catch_all_alias"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            return super().changelist_view(request, extra_context)
        settings_row = RoutingSettings.load()
        return redirect(reverse("admin:routing_routingsettings_change", args=[settings_row.pk]))
