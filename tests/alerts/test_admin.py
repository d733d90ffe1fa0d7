"""The alerts admin: recipients and webhooks are edited there; a webhook's signing secret is offered once, on the
add form, and never shown again; alerts sent are read-only, with each delivery's status."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from alerts.models import Alert, AlertDelivery, AlertRecipient, AlertWebhook

pytestmark = pytest.mark.django_db


def url(model, view, *args):
    return reverse(f"admin:alerts_{model._meta.model_name}_{view}", args=args)


def test_a_recipient_is_added_with_the_alerts_it_wants(admin_client):
    page = admin_client.get(url(AlertRecipient, "add")).text
    assert "Quota thresholds (80 / 95 / 100 %)" in page
    response = admin_client.post(
        url(AlertRecipient, "add"), {"email": "ops@example.com", "kinds": ["quota", "alias"], "enabled": "on"}
    )
    assert response.status_code == 302
    recipient = AlertRecipient.objects.get()
    assert recipient.kinds == ["quota", "alias"] and recipient.wants("alias") and not recipient.wants("breaker")
    listing = admin_client.get(url(AlertRecipient, "changelist")).text
    assert (
        "ops@example.com" in listing
        and "Quota thresholds, Every route of an alias failing / answering again" in listing
    )


def test_a_webhook_secret_is_offered_once_then_write_only(admin_client):
    add_page = admin_client.get(url(AlertWebhook, "add")).text
    [offered] = re.findall(r'name="secret" value="(whsec_[A-Za-z0-9_-]{43})"', add_page)
    response = admin_client.post(
        url(AlertWebhook, "add"),
        {"name": "pager", "url": "https://hooks.example.com/T0/secret-path", "secret": offered, "enabled": "on"},
    )
    assert response.status_code == 302
    webhook = AlertWebhook.objects.get()
    assert webhook.secret == offered

    change = url(AlertWebhook, "change", webhook.pk)
    for page in (admin_client.get(change).text, admin_client.get(url(AlertWebhook, "changelist")).text):
        assert offered not in page
    assert "secret-path" not in admin_client.get(url(AlertWebhook, "changelist")).text  # the list shows the host

    form = {"name": "pager", "url": webhook.url, "secret": "", "enabled": "on"}
    assert admin_client.post(change, form).status_code == 302
    webhook.refresh_from_db()
    assert webhook.secret == offered  # blank keeps it
    assert admin_client.post(change, form | {"secret": "a-new-secret-of-some-length"}).status_code == 302
    webhook.refresh_from_db()
    assert webhook.secret == "a-new-secret-of-some-length"
    refused = admin_client.post(change, form | {"secret": "short"})
    assert refused.status_code == 200 and "at least 16 characters" in refused.text
    assert repr(webhook) == f"<AlertWebhook {webhook.pk} 'pager'>"


def test_alerts_sent_are_listed_with_their_deliveries_and_cannot_be_edited(admin_client):
    alert = Alert.objects.create(
        kind="quota",
        subject="key:1",
        threshold="requests:80",
        period_start=datetime(2026, 11, 26, tzinfo=UTC),
        title="Key rm-abcdef012 has used 80% of its daily quota of 20 requests",
        details={"threshold_percent": 80},
    )
    AlertDelivery.objects.create(alert=alert, channel="email", target="ops@example.com", status="sent", attempts=1)
    AlertDelivery.objects.create(
        alert=alert, channel="webhook", target="pager", status="failed", attempts=5, last_error="answered HTTP 500"
    )
    listing = admin_client.get(url(Alert, "changelist")).text
    assert "has used 80% of its daily quota" in listing and "1/2 sent" in listing and "1 failed" in listing
    page = admin_client.get(url(Alert, "change", alert.pk)).text
    assert "answered HTTP 500" in page and "ops@example.com" in page
    assert admin_client.get(url(Alert, "add")).status_code == 403
    assert admin_client.post(url(Alert, "change", alert.pk), {"title": "x"}).status_code == 403
