"""The alert dispatcher: one background thread per worker that turns the request path's events (alerts/events.py)
into alerts, each sent once across every worker and restart, and delivers them by email and signed webhook.

Started at lifespan startup and stopped at shutdown (rainymodel_site/asgi.py), beside the log writer. For each
event it *claims* the alert by inserting its `Alert` row; the unique constraints of alerts/models.py make the
insert fail for every worker but the first (and for a restarted one), so only the winner delivers:

- quota crossing: one alert per key or user, metric, threshold (80/95/100 %) and quota period (its start);
- breaker: `breaker_opened` when a provider's breaker goes from closed to open (an *episode*, kept `ongoing`;
  the failed probes that re-open it belong to the same episode), `breaker_closed` when it closes again (the
  conditional UPDATE that ends the episode has one winner);
- alias: `alias_failing` when a call finds every route of an alias failing and no incident on the alias is open;
  the incident ends once a call on the alias has succeeded and no call has failed that way for
  RAINYMODEL_ALERT_RECOVERY_S (60 s), which this thread checks every RAINYMODEL_ALERT_CHECK_S in every worker;
  then `alias_recovered`. The wait keeps a flapping alias from mailing twice a minute.

Deliveries are tried at once; a failure that may pass (SMTP errors, timeouts, connection errors, HTTP 5xx, 408, 429)
is retried with exponential backoff (RAINYMODEL_ALERT_RETRY_BASE_S × 2^n) up to RAINYMODEL_ALERT_ATTEMPTS
attempts. Retries wait in this thread's own schedule (a heap), so one slow receiver never holds back the next alert,
and nothing here ever runs on the event loop. A delivery's state (pending, sent, failed, the last error) is on its
`AlertDelivery` row, visible in the admin. What is still waiting at shutdown gets one last try, then is marked
failed: retries do not survive a restart (the alert itself does, so it is never sent twice).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from alerts import delivery, events
from alerts.delivery import DeliveryFailed
from alerts.models import Alert, AlertDelivery, AlertRecipient, AlertWebhook
from apikeys.models import APIKey

log = logging.getLogger(__name__)

# An open incident's last failure and last success are written at most this often per alias and worker (an outage
# at 1000 calls a second must not become 1000 UPDATEs a second).
TOUCH_EVERY_S = 5.0
PERIOD_WORDS = {"day": "daily", "month": "monthly"}


class Dispatcher:
    def __init__(self):
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._retries: list[tuple[float, int]] = []  # heap of (time.monotonic() due, AlertDelivery id)
        self._touched: dict[tuple[str, str], float] = {}
        self._next_check = 0.0
        self._client: httpx.Client | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        events.enabled = settings.RAINYMODEL_ALERTS
        if not events.enabled:
            return
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="rainymodel-alerts", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Handle what is queued, give waiting retries one last try, stop the thread. Safe to call twice."""
        if not events.enabled:  # RAINYMODEL_ALERTS=false: never started, nothing to do (and no database to touch)
            return
        self._stopping.set()
        events.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        try:
            self.run_once(final=True)
        except Exception:
            log.exception("alerts: the last round before shutdown failed")
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                events.wake.wait(self._wait_s())
                events.wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    self.run_once()
                except Exception:
                    log.exception("alerts: a round failed; retrying shortly")
                    connections.close_all()
                    time.sleep(1.0)
        finally:
            connections.close_all()

    def _wait_s(self) -> float:
        now = time.monotonic()
        wait = max(0.0, self._next_check - now)
        if self._retries:
            wait = min(wait, max(0.0, self._retries[0][0] - now))
        return wait

    def run_once(self, final: bool = False) -> None:
        """One round: every queued event, the incident check when due, the retries that are due (all, if final).
        Blocking; the thread calls it, and tests may call it directly."""
        with self._run_lock:
            self._handle_events()
            if final or time.monotonic() >= self._next_check:
                self.check_incidents()
                self._next_check = time.monotonic() + settings.RAINYMODEL_ALERT_CHECK_S
            self._retry_due(final)

    # --- events -----------------------------------------------------------------------------------------------

    def _handle_events(self) -> None:
        while events.queue:
            event = events.queue.popleft()
            try:
                self.handle(event)
            except (OperationalError, InterfaceError):
                events.queue.appendleft(event)  # the database is away: keep the event for the next round
                raise
            except Exception:
                log.exception("alerts: event %r could not be handled; dropped", event)

    def handle(self, event: events.Event) -> None:
        match event:
            case events.QuotaCrossed():
                self._quota(event)
            case events.BreakerOpened():
                self._breaker_opened(event)
            case events.BreakerClosed():
                self._breaker_closed(event)
            case events.AliasFailed():
                self._alias_failed(event)
            case events.AliasAnswered():
                self._alias_answered(event)

    def _quota(self, e: events.QuotaCrossed) -> None:
        words = {"requests": f"{e.maximum:g} requests", "tokens": f"{e.maximum:g} tokens", "cost": f"${e.maximum:g}"}
        period = PERIOD_WORDS.get(e.period, e.period)
        details: dict[str, object]
        if e.subject_kind == "key":
            name = APIKey.objects.filter(pk=e.subject_id).values_list("name", flat=True).first() or ""
            who = f"Key {e.subject_label}" + (f" ({name})" if name else "")
            details = {"key_id": e.subject_id, "key_prefix": e.subject_label, "key_name": name}
            whose = "its"
        else:
            who = f"User {e.subject_label}"
            details = {"user_id": e.subject_id, "username": e.subject_label}
            whose = "the"
        title = f"{who} has used {e.threshold}% of {whose} {period} quota of {words[e.metric]}"
        if e.subject_kind == "user":
            title += " (all the user's keys together)"
        details |= {
            "metric": e.metric,
            "threshold_percent": e.threshold,
            "used": round(e.used, 6),
            "limit": e.maximum,
            "period": e.period,
            "period_start": e.period_start.isoformat(),
            "period_end": e.period_end.isoformat(),
        }
        claimed = _claim(
            kind=Alert.Kind.QUOTA,
            subject=f"{e.subject_kind}:{e.subject_id}",
            threshold=f"{e.metric}:{e.threshold}",
            period_start=e.period_start,
            title=title,
            details=details,
        )
        if claimed is not None:
            self.send(*claimed)

    def _breaker_opened(self, e: events.BreakerOpened) -> None:
        subject = f"provider:{e.provider}"
        try:
            with transaction.atomic():
                # An episode still open here was closed without our hearing (an admin reset, a lost store).
                Alert.objects.filter(
                    kind=Alert.Kind.BREAKER_OPENED, subject=subject, ongoing=True, period_start__lt=e.at
                ).update(ongoing=False, ended_at=e.at)
                alert = Alert.objects.create(
                    kind=Alert.Kind.BREAKER_OPENED,
                    subject=subject,
                    period_start=e.at,
                    ongoing=True,
                    title=f"Provider {e.provider}'s breaker opened ({e.reason}): its routes are skipped, then probed "
                    f"every {e.cooldown_s:g}s",
                    details={"provider": e.provider, "reason": e.reason, "cooldown_s": e.cooldown_s},
                )
                rows = plan(alert)
        except IntegrityError:
            return
        self.send(alert, rows)

    def _breaker_closed(self, e: events.BreakerClosed) -> None:
        subject = f"provider:{e.provider}"
        episode = Alert.objects.filter(
            kind=Alert.Kind.BREAKER_OPENED, subject=subject, ongoing=True, period_start__lte=e.at
        ).first()
        if episode is None:  # opened before alerts were on, or another worker has closed it already
            return
        open_s = (e.at - episode.period_start).total_seconds()
        try:
            with transaction.atomic():
                if not Alert.objects.filter(pk=episode.pk, ongoing=True).update(ongoing=False, ended_at=e.at):
                    return
                alert = Alert.objects.create(
                    kind=Alert.Kind.BREAKER_CLOSED,
                    subject=subject,
                    period_start=episode.period_start,
                    title=f"Provider {e.provider}'s breaker closed: it answers again after {_duration(open_s)}",
                    details={
                        "provider": e.provider,
                        "opened_at": episode.period_start.isoformat(),
                        "closed_at": e.at.isoformat(),
                        "open_s": round(open_s, 3),
                    },
                )
                rows = plan(alert)
        except IntegrityError:
            return
        self.send(alert, rows)

    def _alias_failed(self, e: events.AliasFailed) -> None:
        subject = f"alias:{e.alias}"
        claimed = _claim(
            kind=Alert.Kind.ALIAS_FAILING,
            subject=subject,
            period_start=e.at,
            ongoing=True,
            last_failure_at=e.at,
            title=f"Every route of alias {e.alias} is failing ({e.error_code})",
            details={"alias": e.alias, "error_code": e.error_code, "failing_since": e.at.isoformat()},
        )
        events.failing_aliases |= {e.alias}
        if claimed is not None:
            self._touched[(e.alias, "failure")] = time.monotonic()
            self.send(*claimed)
        elif self._due((e.alias, "failure")):
            Alert.objects.filter(kind=Alert.Kind.ALIAS_FAILING, subject=subject, ongoing=True).update(
                last_failure_at=e.at
            )

    def _alias_answered(self, e: events.AliasAnswered) -> None:
        if self._due((e.alias, "success")):
            Alert.objects.filter(kind=Alert.Kind.ALIAS_FAILING, subject=f"alias:{e.alias}", ongoing=True).update(
                last_success_at=e.at
            )

    def _due(self, what: tuple[str, str]) -> bool:
        now = time.monotonic()
        if now - self._touched.get(what, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return False
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[what] = now
        return True

    def check_incidents(self) -> None:
        """End the alias incidents that have recovered (a success, and no failure for RAINYMODEL_ALERT_RECOVERY_S),
        and tell the request path which aliases are failing now."""
        now = timezone.now()
        recovered = Alert.objects.filter(
            kind=Alert.Kind.ALIAS_FAILING,
            ongoing=True,
            last_success_at__isnull=False,
            last_success_at__gt=F("last_failure_at"),
            last_failure_at__lte=now - timedelta(seconds=settings.RAINYMODEL_ALERT_RECOVERY_S),
        )
        for incident in recovered:
            alias = incident.subject.removeprefix("alias:")
            failing_s = (now - incident.period_start).total_seconds()
            try:
                with transaction.atomic():
                    if not Alert.objects.filter(pk=incident.pk, ongoing=True).update(ongoing=False, ended_at=now):
                        continue
                    alert = Alert.objects.create(
                        kind=Alert.Kind.ALIAS_RECOVERED,
                        subject=incident.subject,
                        period_start=incident.period_start,
                        title=f"Alias {alias} answers again after {_duration(failing_s)} of failing",
                        details={
                            "alias": alias,
                            "failing_since": incident.period_start.isoformat(),
                            "last_failure_at": _iso(incident.last_failure_at),
                            "answered_at": _iso(incident.last_success_at),
                        },
                    )
                    rows = plan(alert)
            except IntegrityError:
                continue
            self.send(alert, rows)
        ongoing = Alert.objects.filter(kind=Alert.Kind.ALIAS_FAILING, ongoing=True).values_list("subject", flat=True)
        events.failing_aliases = frozenset(subject.removeprefix("alias:") for subject in ongoing)

    # --- deliveries -------------------------------------------------------------------------------------------

    def send(self, alert: Alert, rows: list[AlertDelivery]) -> None:
        """Try each of a just-claimed alert's deliveries."""
        log.warning("alert %s: %s", alert.pk, alert.title)
        for row in rows:
            self._attempt(row)

    def _attempt(self, row: AlertDelivery, final: bool = False) -> None:
        row.attempts += 1
        try:
            try:
                if row.channel == "email":
                    delivery.send_email(row.alert, row.target)
                elif row.webhook is None or not row.webhook.enabled:
                    raise DeliveryFailed(f"webhook {row.target} was deleted or disabled", retry=False)
                else:
                    delivery.post_webhook(self._http(), row.alert, row.webhook)
            except DeliveryFailed:
                raise
            except Exception as exc:  # a bug or a backend's surprise: this delivery fails, the others still go
                log.exception("alert %s: %s delivery to %s failed unexpectedly", row.alert_id, row.channel, row.target)
                raise DeliveryFailed(
                    f"{row.channel} to {row.target} failed: {type(exc).__name__}", retry=False
                ) from None
        except DeliveryFailed as exc:
            row.last_error = str(exc)
            if exc.retry and not final and row.attempts < settings.RAINYMODEL_ALERT_ATTEMPTS:
                wait = settings.RAINYMODEL_ALERT_RETRY_BASE_S * 2 ** (row.attempts - 1)
                heapq.heappush(self._retries, (time.monotonic() + wait, row.pk))
                log.warning("alert %s: %s; attempt %d, retrying in %.1fs", row.alert_id, exc, row.attempts, wait)
            else:
                row.status = AlertDelivery.Status.FAILED
                if exc.retry and final and row.attempts < settings.RAINYMODEL_ALERT_ATTEMPTS:
                    row.last_error = f"{row.last_error} (gave up at shutdown)"
                log.error("alert %s: %s; gave up after %d attempt(s)", row.alert_id, exc, row.attempts)
        else:
            row.status = AlertDelivery.Status.SENT
            row.last_error = ""
        row.save(update_fields=["attempts", "status", "last_error", "updated_at"])

    def _retry_due(self, final: bool) -> None:
        while self._retries and (final or self._retries[0][0] <= time.monotonic()):
            _, pk = heapq.heappop(self._retries)
            row = AlertDelivery.objects.select_related("alert", "webhook").filter(pk=pk).first()
            if row is not None and row.status == AlertDelivery.Status.PENDING:
                self._attempt(row, final=final)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=settings.RAINYMODEL_ALERT_WEBHOOK_TIMEOUT_S, follow_redirects=False)
        return self._client

    def pending_retries(self) -> int:
        return len(self._retries)


def _claim(**fields) -> tuple[Alert, list[AlertDelivery]] | None:
    """Insert the alert's row and its deliveries in one transaction, or None when another worker (or an earlier life
    of this one) already has."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(**fields)
            return alert, plan(alert)
    except IntegrityError:
        return None


def plan(alert: Alert) -> list[AlertDelivery]:
    """The alert's deliveries, one per enabled recipient and webhook that wants its kind; written with the alert (a
    database error between the claim and the plan would otherwise leave a claimed alert with nobody to tell)."""
    rows = [
        AlertDelivery(alert=alert, channel="email", target=r.email)
        for r in AlertRecipient.objects.filter(enabled=True)
        if r.wants(alert.group)
    ]
    rows += [
        AlertDelivery(alert=alert, channel="webhook", target=w.name, webhook=w)
        for w in AlertWebhook.objects.filter(enabled=True)
        if w.wants(alert.group)
    ]
    for row in rows:
        row.save()
    return rows


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


dispatcher = Dispatcher()
