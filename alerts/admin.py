"""The admin for alerts: recipients and webhooks (edited), and the alerts sent with their deliveries (read only).

A webhook's signing secret is write-only: the add form offers a freshly generated one, in the clear, to copy into
the receiver before saving; after that the secret is never displayed again (the change form has an empty password
field: leave it blank to keep the secret, type a new one to replace it).
"""

import secrets
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.db.models import Count, Q
from django.utils.html import format_html

from alerts.models import KIND_GROUPS, Alert, AlertDelivery, AlertRecipient, AlertWebhook


class KindsField(forms.MultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        super().__init__(
            choices=KIND_GROUPS, required=False, label="Alerts", help_text="Which alerts go here. None ticked: all."
        )


class RecipientForm(forms.ModelForm):
    kinds = KindsField()

    class Meta:
        model = AlertRecipient
        fields = ["email", "kinds", "enabled"]


def kinds_text(obj) -> str:
    names = dict(KIND_GROUPS)
    return ", ".join(names[k].split(" (")[0] for k in obj.kinds if k in names) or "all"


@admin.register(AlertRecipient)
class AlertRecipientAdmin(admin.ModelAdmin):
    form = RecipientForm
    list_display = ["email", "enabled", "alerts"]
    list_filter = ["enabled"]
    search_fields = ["email"]

    @admin.display(description="Alerts")
    def alerts(self, obj):
        return kinds_text(obj)


class WebhookForm(forms.ModelForm):
    kinds = KindsField()
    secret = forms.CharField(
        required=False,
        max_length=200,
        label="Signing secret",
        widget=forms.TextInput(attrs={"size": 60, "autocomplete": "off"}),
        help_text="Copy it into the receiver now: it is never shown again once saved. "
        "Receivers verify X-RainyModel-Signature with it (docs/observability.md).",
    )

    class Meta:
        model = AlertWebhook
        fields = ["name", "url", "secret", "kinds", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # write-only from here on
            self.fields["secret"].widget = forms.PasswordInput(render_value=False)
            self.fields["secret"].help_text = "Leave empty to keep the current secret; type a new one to replace it."
            self.initial["secret"] = ""
        else:
            self.fields["secret"].required = True
            self.initial.setdefault("secret", "whsec_" + secrets.token_urlsafe(32))

    def clean_secret(self):
        value = self.cleaned_data["secret"].strip()
        if not value and self.instance.pk:
            return AlertWebhook.objects.get(pk=self.instance.pk).secret
        if len(value) < 16:
            raise forms.ValidationError("Use at least 16 characters (the suggested one has 43 random ones).")
        return value


@admin.register(AlertWebhook)
class AlertWebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    list_display = ["name", "host", "enabled", "alerts"]
    list_filter = ["enabled"]
    search_fields = ["name"]

    @admin.display(description="Host")
    def host(self, obj):  # not the whole URL in the list: its path may carry a token
        return urlsplit(obj.url).hostname

    @admin.display(description="Alerts")
    def alerts(self, obj):
        return kinds_text(obj)


class DeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = readonly_fields = ("channel", "target", "status", "attempts", "last_error", "updated_at")
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "title", "delivery", "incident"]
    list_filter = ["kind", "ongoing", "deliveries__status"]
    search_fields = ["title", "subject"]
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]
    fields = readonly_fields = (
        "kind",
        "title",
        "subject",
        "threshold",
        "period_start",
        "created_at",
        "ongoing",
        "last_failure_at",
        "last_success_at",
        "ended_at",
        "details",
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_sent=Count("deliveries", filter=Q(deliveries__status=AlertDelivery.Status.SENT), distinct=True),
                n_failed=Count("deliveries", filter=Q(deliveries__status=AlertDelivery.Status.FAILED), distinct=True),
                n_all=Count("deliveries", distinct=True),
            )
        )

    @admin.display(description="Delivered")
    def delivery(self, obj):
        if not obj.n_all:
            return "nobody subscribed"
        pending = obj.n_all - obj.n_sent - obj.n_failed
        parts = [f"{obj.n_sent}/{obj.n_all} sent"]
        if obj.n_failed:
            parts.append(format_html('<strong class="errornote-inline">{} failed</strong>', obj.n_failed))
        if pending:
            parts.append(f"{pending} retrying")
        return format_html(", ".join(["{}"] * len(parts)), *parts)

    @admin.display(description="Incident")
    def incident(self, obj):
        """Breaker episodes and alias incidents are open until their closing alert; other kinds have none."""
        if obj.kind not in (Alert.Kind.BREAKER_OPENED, Alert.Kind.ALIAS_FAILING):
            return ""
        return "open" if obj.ongoing else "ended"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
