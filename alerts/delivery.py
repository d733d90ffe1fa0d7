"""One delivery attempt of one alert: an email through Django's email backend (EMAIL_* settings), or a signed JSON
POST to a webhook. Blocking; only the dispatcher's thread calls it, never the event loop.

The signature follows Stripe's and GitHub's scheme, written by hand because it is two lines of `hmac` and the
header format is ours (a library such as standardwebhooks would impose its own headers):

    X-RainyModel-Timestamp: <unix seconds>
    X-RainyModel-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver recomputes it over the raw body, compares in constant time and refuses timestamps older than a few
minutes (docs/observability.md has a verifier). Each retry is signed afresh with a new timestamp; the
`X-RainyModel-Alert` header and the body's `id` stay the same, so a receiver can drop a duplicate.

Errors are reported by `DeliveryFailed(message, retry)`; the message names the host at most, never the URL's path
or query (a webhook URL may carry a token) and never the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import time
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.core.mail import EmailMessage

from alerts.models import Alert, AlertWebhook

SIGNATURE_HEADER = "X-RainyModel-Signature"
TIMESTAMP_HEADER = "X-RainyModel-Timestamp"
ALERT_HEADER = "X-RainyModel-Alert"
EVENT_HEADER = "X-RainyModel-Event"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class DeliveryFailed(Exception):
    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


def payload(alert: Alert) -> dict:
    """The webhook body: what an alert says, in JSON (documented in docs/observability.md, "Alerts")."""
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "subject": alert.subject,
        "threshold": alert.threshold or None,
        "period_start": alert.period_start.isoformat(),
        "created_at": alert.created_at.isoformat(),
        "title": alert.title,
        "text": text(alert),
        "details": alert.details,
    }


def text(alert: Alert) -> str:
    """The alert in plain words: the email's body and the webhook's `text`."""
    lines = [alert.title, ""]
    for name, value in alert.details.items():
        lines.append(f"{name.replace('_', ' ')}: {value}")
    lines += ["", f"Alert {alert.pk} ({alert.kind}), sent by RainyModel at {alert.created_at.isoformat()}."]
    return "\n".join(lines)


def send_email(alert: Alert, address: str) -> None:
    message = EmailMessage(
        subject=f"[RainyModel] {alert.title}",
        body=text(alert),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={ALERT_HEADER: str(alert.pk)},
    )
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"email to {address} failed: {type(exc).__name__}: {exc}"[:480], retry=True) from None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def post_webhook(client: httpx.Client, alert: Alert, webhook: AlertWebhook) -> None:
    body = orjson.dumps(payload(alert))
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"RainyModel/{settings.VERSION} alerts",
        ALERT_HEADER: str(alert.pk),
        EVENT_HEADER: alert.kind,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(webhook.secret, timestamp, body),
    }
    host = urlsplit(webhook.url).hostname or "?"
    try:
        response = client.post(webhook.url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryFailed(f"webhook {webhook.name} ({host}) timed out", retry=True) from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"webhook {webhook.name} ({host}): {type(exc).__name__}", retry=True) from None
    if 200 <= response.status_code < 300:
        return
    raise DeliveryFailed(
        f"webhook {webhook.name} ({host}) answered HTTP {response.status_code}",
        retry=response.status_code in RETRY_STATUSES,
    )
