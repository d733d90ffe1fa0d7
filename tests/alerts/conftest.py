"""What the alert tests share: a real SMTP server (aiosmtpd) and a webhook receiver, both on loopback, and the
recipients and webhooks that point at them.

    def test_x(smtp, webhook_receiver, subscribers):
        subscribers()                       # one email recipient and one webhook, for every kind
        ...
        smtp.wait_for(1)[0]["Subject"]
        webhook_receiver.wait_for(1)[0].json()
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from tests.fakes.server import free_port

WEBHOOK_SECRET = "whsec_test-secret-0123456789abcdef"


class SmtpInbox:
    """aiosmtpd's handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)


@pytest.fixture
def smtp():
    """A real SMTP server on a loopback port; `.host`, `.port`, `.messages`, `.wait_for(n)`."""
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.host, inbox.port = "127.0.0.1", port
    yield inbox
    controller.stop()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on loopback that records every POST and answers with the scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rainymodel?token=url-token-123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def verify(secret: str, received: Received, tolerance_s: float = 300) -> bool:
    """What a receiver does (docs/observability.md, "Verifying a webhook"): HMAC-SHA256 over "<timestamp>.<body>",
    compared in constant time, and a fresh timestamp."""
    timestamp = received.headers["x-rainymodel-timestamp"]
    signed = f"{timestamp}.".encode() + received.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= tolerance_s
    return fresh and hmac.compare_digest(expected, received.headers["x-rainymodel-signature"])


@pytest.fixture
def subscribers(db, smtp, webhook_receiver):
    """`subscribers(kinds=[])` creates an email recipient at the SMTP server and a webhook at the receiver."""
    from alerts.models import AlertRecipient, AlertWebhook

    def create(kinds: list[str] | None = None):
        AlertRecipient.objects.create(email="ops@example.com", kinds=kinds or [])
        AlertWebhook.objects.create(name="ops-hook", url=webhook_receiver.url, secret=WEBHOOK_SECRET, kinds=kinds or [])

    return create


def server_env(smtp) -> dict[str, str]:
    """A RainyModel server process that mails through the test SMTP server and retries and recovers quickly."""
    return {
        "EMAIL_HOST": smtp.host,
        "EMAIL_PORT": str(smtp.port),
        "RAINYMODEL_ALERT_RETRY_BASE_S": "0.2",
        "RAINYMODEL_ALERT_CHECK_S": "0.2",
        "RAINYMODEL_ALERT_RECOVERY_S": "0",
    }


@pytest.fixture(autouse=True)
def alert_queue():
    """The request path's alert queue, empty and switched on, for each test."""
    from alerts import events

    events.queue.clear()
    events.failing_aliases = frozenset()
    events.enabled = True
    yield events.queue
    events.queue.clear()
    events.failing_aliases = frozenset()


@pytest.fixture
def mail_to_smtp(settings, smtp):
    """In this process, send mail through the test SMTP server (pytest-django swaps in the locmem backend)."""
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": smtp.host, "port": smtp.port, "timeout": 5},
        }
    }
    settings.RAINYMODEL_ALERT_RETRY_BASE_S = 0.05
    return smtp
