"""The alerts admin in a real browser at 1280 px: recipients, webhooks (the add form offers a secret to copy) and
the alerts sent with their delivery status. Screenshots go to tests/artifacts/admin-alerts-*.png."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.browser.test_admin_pages import off_screen, shoot, sign_in_admin

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alerts_world(django_user_model):
    from alerts.models import Alert, AlertDelivery, AlertRecipient, AlertWebhook

    django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True, is_superuser=True)
    AlertRecipient.objects.create(email="oncall@example.com")
    AlertRecipient.objects.create(email="finance@example.com", kinds=["quota"])
    AlertRecipient.objects.create(email="old-pager@example.com", kinds=["breaker", "alias"], enabled=False)
    hook = AlertWebhook.objects.create(
        name="pagerduty-events", url="https://events.example.com/v2/enqueue/abc", secret="x" * 40, kinds=["breaker"]
    )
    AlertWebhook.objects.create(name="slack-ops", url="https://hooks.example.com/services/T0/B0/xyz", secret="y" * 40)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [
        (
            "quota",
            "key:3",
            "requests:80",
            day,
            "Key rm-8fK2aQ1z (alice-laptop) has used 80% of its daily quota of 10000 requests",
        ),
        (
            "quota",
            "key:3",
            "requests:95",
            day,
            "Key rm-8fK2aQ1z (alice-laptop) has used 95% of its daily quota of 10000 requests",
        ),
        (
            "breaker_opened",
            "provider:ollama-primary",
            "",
            day + timedelta(hours=3),
            "Provider ollama-primary's breaker opened (connect_error): its routes are skipped, then probed every 15s",
        ),
        (
            "breaker_closed",
            "provider:ollama-primary",
            "",
            day + timedelta(hours=3),
            "Provider ollama-primary's breaker closed: it answers again after 4 min",
        ),
        (
            "alias_failing",
            "alias:rainymodel/code",
            "",
            day + timedelta(hours=5),
            "Every route of alias rainymodel/code is failing (all_upstreams_failed)",
        ),
    ]
    for kind, subject, threshold, start, title in rows:
        alert = Alert.objects.create(
            kind=kind,
            subject=subject,
            threshold=threshold,
            period_start=start,
            title=title,
            ongoing=kind == "alias_failing",
            details={"subject": subject},
        )
        AlertDelivery.objects.create(
            alert=alert, channel="email", target="oncall@example.com", status="sent", attempts=1
        )
        if kind.startswith("breaker"):
            failed = kind == "breaker_opened"
            AlertDelivery.objects.create(
                alert=alert,
                channel="webhook",
                target=hook.name,
                webhook=hook,
                status="failed" if failed else "sent",
                attempts=5 if failed else 2,
                last_error="webhook pagerduty-events (events.example.com) answered HTTP 503" if failed else "",
            )
    return hook


def test_the_alerts_admin_pages_fit_a_1280_px_screen(page, alerts_world):
    sign_in_admin(page)
    problems = []

    page.goto("/admin/alerts/alertrecipient/")
    shoot(page, "alerts-recipients")
    problems += off_screen(page, "th.column-email", "th.column-enabled", "th.column-alerts")

    page.goto("/admin/alerts/alertwebhook/add/")
    shoot(page, "alerts-webhook-add")
    assert page.input_value("#id_secret").startswith("whsec_")

    page.goto(f"/admin/alerts/alertwebhook/{alerts_world.pk}/change/")
    shoot(page, "alerts-webhook-change")
    assert page.input_value("#id_secret") == "" and page.get_attribute("#id_secret", "type") == "password"

    page.goto("/admin/alerts/alert/")
    shoot(page, "alerts-sent")
    problems += off_screen(page, "th.column-kind", "th.column-title", "th.column-delivery")
    opened = page.locator("#result_list tr", has_text="breaker opened (connect_error)")
    assert "1/2 sent, 1 failed" in opened.locator("td.field-delivery").inner_text()

    opened.locator("th a, td a").first.click()
    shoot(page, "alerts-sent-detail")
    assert "answered HTTP 503" in page.content()
    assert problems == []
