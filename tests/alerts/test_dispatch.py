"""alerts/dispatch.py and alerts/delivery.py in this process: claiming each alert once, a real SMTP server, a
signed webhook with retries. The dispatcher is driven by hand (`run_once`), as its thread would."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from alerts import events
from alerts.dispatch import Dispatcher
from alerts.models import Alert, AlertDelivery, AlertRecipient, AlertWebhook
from tests.alerts.conftest import WEBHOOK_SECRET, verify

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 26, tzinfo=UTC)


def crossing(threshold=80, subject_id=7, metric="requests", start=DAY) -> events.QuotaCrossed:
    return events.QuotaCrossed(
        subject_kind="key",
        subject_id=subject_id,
        subject_label="rm-abcdef012",
        metric=metric,
        threshold=threshold,
        period="day",
        period_start=start,
        period_end=start + timedelta(days=1),
        used=16,
        maximum=20,
    )


def drain(dispatcher: Dispatcher, timeout: float = 5.0) -> None:
    """Rounds until nothing is queued or waiting for a retry."""
    deadline = time.monotonic() + timeout
    dispatcher.run_once()
    while (events.queue or dispatcher.pending_retries()) and time.monotonic() < deadline:
        time.sleep(0.02)
        dispatcher.run_once()


def test_a_quota_alert_reaches_a_real_smtp_server_and_a_signed_webhook(mail_to_smtp, webhook_receiver, subscribers):
    subscribers()
    events.notify(crossing(80))
    drain(Dispatcher())

    [mail] = mail_to_smtp.wait_for(1)
    assert mail["Subject"].strip() == "[RainyModel] Key rm-abcdef012 has used 80% of its daily quota of 20 requests"
    assert mail["X-Envelope-To"] == "ops@example.com"
    assert "threshold percent: 80" in mail.get_content()

    [hook] = webhook_receiver.wait_for(1)
    assert verify(WEBHOOK_SECRET, hook)
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["x-rainymodel-event"] == "quota"
    body = hook.json()
    alert = Alert.objects.get()
    assert body["id"] == alert.pk == int(hook.headers["x-rainymodel-alert"])
    assert body["kind"] == "quota" and body["subject"] == "key:7" and body["threshold"] == "requests:80"
    assert body["details"]["threshold_percent"] == 80 and body["details"]["limit"] == 20
    assert body["period_start"] == DAY.isoformat()
    assert sorted(AlertDelivery.objects.values_list("channel", "status", "attempts")) == [
        ("email", "sent", 1),
        ("webhook", "sent", 1),
    ]


def test_a_signature_over_another_body_or_with_another_secret_does_not_verify(db, webhook_receiver, subscribers):
    subscribers(kinds=["quota"])
    events.notify(crossing(95))
    drain(Dispatcher())
    [hook] = webhook_receiver.wait_for(1)
    assert verify(WEBHOOK_SECRET, hook)
    assert not verify("another-secret-entirely", hook)
    hook.body = hook.body.replace(b"95", b"96")
    assert not verify(WEBHOOK_SECRET, hook)


def test_a_webhook_answering_500_is_retried_with_backoff_and_then_delivered(mail_to_smtp, webhook_receiver):
    AlertWebhook.objects.create(name="flaky", url=webhook_receiver.url, secret=WEBHOOK_SECRET)
    webhook_receiver.statuses = [500, 503]
    dispatcher = Dispatcher()
    events.notify(crossing(100))
    started = time.monotonic()
    drain(dispatcher)

    received = webhook_receiver.wait_for(3)
    assert len(received) == 3
    assert all(verify(WEBHOOK_SECRET, r) for r in received)  # each try is signed afresh
    assert len({r.headers["x-rainymodel-alert"] for r in received}) == 1  # the same alert: receivers can dedupe
    assert time.monotonic() - started >= 0.05 + 0.1  # waited base, then twice base
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")


def test_a_delivery_that_keeps_failing_is_given_up_visibly_and_logged_without_secrets(
    mail_to_smtp, webhook_receiver, settings, caplog
):
    settings.RAINYMODEL_ALERT_ATTEMPTS = 3
    AlertWebhook.objects.create(name="down", url=webhook_receiver.url, secret=WEBHOOK_SECRET)
    webhook_receiver.statuses = [500] * 10
    caplog.set_level(logging.WARNING, logger="alerts")
    events.notify(crossing(80))
    drain(Dispatcher())

    assert len(webhook_receiver.received) == 3
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 3
    assert delivery.last_error == "webhook down (127.0.0.1) answered HTTP 500"
    assert "gave up after 3 attempt(s)" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text and "url-token-123" not in caplog.text
    assert "url-token-123" not in delivery.last_error


def test_a_client_error_is_not_retried(db, webhook_receiver):
    AlertWebhook.objects.create(name="gone", url=webhook_receiver.url, secret=WEBHOOK_SECRET)
    webhook_receiver.statuses = [404]
    events.notify(crossing(80))
    drain(Dispatcher())
    assert len(webhook_receiver.received) == 1
    assert AlertDelivery.objects.get().status == "failed"


def test_an_unreachable_smtp_server_is_a_failed_delivery_not_a_crash(db, settings):
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 1},  # discard port: nothing listens
        }
    }
    settings.RAINYMODEL_ALERT_ATTEMPTS = 2
    settings.RAINYMODEL_ALERT_RETRY_BASE_S = 0.01
    AlertRecipient.objects.create(email="ops@example.com")
    events.notify(crossing(80))
    drain(Dispatcher())
    delivery = AlertDelivery.objects.get()
    assert (delivery.channel, delivery.status, delivery.attempts) == ("email", "failed", 2)
    assert delivery.last_error.startswith("email to ops@example.com failed: ConnectionRefusedError")


def test_each_threshold_is_claimed_once_by_two_workers_and_again_after_a_restart(mail_to_smtp, subscribers):
    subscribers()
    first, second = Dispatcher(), Dispatcher()  # two workers: both see the same crossing (they never do, but if)
    for dispatcher in (first, second, Dispatcher()):  # ... and a worker started later with the same event
        for threshold in (80, 95, 100):
            events.notify(crossing(threshold))
        drain(dispatcher)
    assert sorted(Alert.objects.values_list("threshold", flat=True)) == ["requests:100", "requests:80", "requests:95"]
    assert len(mail_to_smtp.wait_for(3)) == 3
    time.sleep(0.2)
    assert len(mail_to_smtp.messages) == 3
    # The next period, another metric or another key are alerts of their own.
    events.notify(crossing(80, start=DAY + timedelta(days=1)))
    events.notify(crossing(80, metric="tokens"))
    events.notify(crossing(80, subject_id=8))
    drain(first)
    assert Alert.objects.count() == 6


def test_recipients_get_only_the_kinds_they_ticked(mail_to_smtp):
    AlertRecipient.objects.create(email="quota@example.com", kinds=["quota"])
    AlertRecipient.objects.create(email="breakers@example.com", kinds=["breaker"])
    AlertRecipient.objects.create(email="off@example.com", enabled=False)
    dispatcher = Dispatcher()
    events.notify(crossing(80))
    events.breaker_opened("hf", "connect_error", 15.0)
    drain(dispatcher)
    sent = sorted((m["X-Envelope-To"], m["Subject"].strip().split()[1]) for m in mail_to_smtp.wait_for(2))
    assert sent == [("breakers@example.com", "Provider"), ("quota@example.com", "Key")]


def test_a_breaker_episode_is_announced_when_it_opens_and_once_when_it_closes(db, webhook_receiver, subscribers):
    subscribers(kinds=["breaker"])
    first, second = Dispatcher(), Dispatcher()
    events.breaker_opened("hf", "connect_error", 15.0)
    drain(first)
    events.breaker_closed("hf")  # two workers both saw the probe succeed
    events.breaker_closed("hf")
    drain(second)
    drain(first)
    events.breaker_closed("hf")  # a stale close after the episode ended: nothing
    drain(first)
    kinds = [r.json()["kind"] for r in webhook_receiver.wait_for(2)]
    assert kinds == ["breaker_opened", "breaker_closed"]
    closed = Alert.objects.get(kind="breaker_closed")
    opened = Alert.objects.get(kind="breaker_opened")
    assert closed.period_start == opened.period_start and not opened.ongoing and opened.ended_at is not None
    assert webhook_receiver.received[0].json()["title"].startswith("Provider hf's breaker opened (connect_error)")

    events.breaker_opened("hf", "http_401", 15.0)  # a new episode
    drain(first)
    assert Alert.objects.filter(kind="breaker_opened").count() == 2


def test_an_alias_incident_is_announced_once_and_ends_after_a_success_and_a_quiet_spell(
    db, webhook_receiver, subscribers, settings
):
    settings.RAINYMODEL_ALERT_RECOVERY_S = 0.3
    subscribers(kinds=["alias"])
    first, second = Dispatcher(), Dispatcher()
    for dispatcher in (first, second):
        for _ in range(3):
            events.call_finished("rainymodel/auto", 502, "all_upstreams_failed")
        drain(dispatcher)
    assert [r.json()["kind"] for r in webhook_receiver.wait_for(1)] == ["alias_failing"]
    assert events.failing_aliases == {"rainymodel/auto"}

    events.call_finished("rainymodel/auto", 200, "")
    drain(second)
    first.check_incidents()
    second.check_incidents()
    assert Alert.objects.filter(kind="alias_recovered").count() == 0  # not quiet long enough yet

    time.sleep(0.35)
    first.check_incidents()
    second.check_incidents()
    assert [r.json()["kind"] for r in webhook_receiver.wait_for(2)] == ["alias_failing", "alias_recovered"]
    assert events.failing_aliases == frozenset()
    assert not Alert.objects.filter(ongoing=True).exists()

    events.call_finished("rainymodel/auto", 503, "no_available_route")  # a new incident
    drain(first)
    assert [r.json()["kind"] for r in webhook_receiver.wait_for(3)][-1] == "alias_failing"


def test_a_failure_after_the_success_keeps_the_incident_open(db, settings):
    settings.RAINYMODEL_ALERT_RECOVERY_S = 0
    dispatcher = Dispatcher()
    events.call_finished("rainymodel/auto", 502, "all_upstreams_failed")
    drain(dispatcher)
    events.call_finished("rainymodel/auto", 200, "")
    drain(dispatcher)
    Alert.objects.update(last_failure_at=datetime.now(UTC))  # a later failure (from any worker)
    dispatcher.check_incidents()
    assert Alert.objects.get().ongoing


def test_an_alert_about_a_200_character_alias_name_is_still_recorded(db):
    name = "rainymodel/" + "x" * 189
    events.call_finished(name, 502, "all_upstreams_failed")
    drain(Dispatcher())
    alert = Alert.objects.get()
    assert alert.subject == f"alias:{name}" and alert.title.endswith(f"{name} is failing (all_upstreams_failed)")


def test_a_broken_email_setting_fails_the_email_and_the_webhook_still_goes(db, settings, webhook_receiver, subscribers):
    settings.MAILERS = {"default": {"BACKEND": "no.such.EmailBackend"}}
    subscribers()
    events.notify(crossing(80))
    drain(Dispatcher())
    assert len(webhook_receiver.wait_for(1)) == 1
    assert sorted(AlertDelivery.objects.values_list("channel", "status", "last_error")) == [
        ("email", "failed", "email to ops@example.com failed: InvalidMailer"),
        ("webhook", "sent", ""),
    ]


def test_switched_off_no_thread_starts_and_nothing_is_queued(db, settings):
    settings.RAINYMODEL_ALERTS = False
    dispatcher = Dispatcher()
    dispatcher.start()
    try:
        assert dispatcher._thread is None and events.enabled is False
        events.call_finished("rainymodel/auto", 502, "all_upstreams_failed")
        assert not events.queue
    finally:
        dispatcher.stop()
        events.enabled = True
