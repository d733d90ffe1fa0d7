"""The request path's side of alerts: notice that something worth telling an operator happened, and queue it.

Three kinds of fact are noticed where they are already known, with one call each:
- a quota counter moved past 80, 95 or 100 % of its maximum (`quota_used`, from limits/quotas.py, which has just
  incremented the counter and so knows the value before and after: a crossing is `before < t·max <= after`);
- a provider's breaker opened or closed (`breaker_opened` / `breaker_closed`, from routing/proxy/breaker.py, where
  the transition is written);
- a call found every route of its alias failing, or an alias that is failing answered again (`call_finished`,
  from routing/proxy/call.py's `Call.finish`).

Each only appends a small frozen event to an in-memory deque (bounded: past `MAX_QUEUED` the oldest is dropped
and counted) and wakes the sender; a background thread per worker (alerts/dispatch.py) takes them from there,
claims each alert in the database so that it is sent once across workers and restarts, and delivers it. So this
module must never touch the database, the network or a lock that anything slow holds, and it imports nothing of
RainyModel but the error codes: it sits on the ground floor so that limits and the proxy can both call it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rainymodel_site import error_codes as codes

THRESHOLDS = (80, 95, 100)  # percent of a quota's maximum
MAX_QUEUED = 10_000
# A call ending with one of these found no route of its alias able to answer.
ALIAS_DOWN_CODES = frozenset({codes.ALL_UPSTREAMS_FAILED, codes.UPSTREAM_TIMEOUT, codes.NO_AVAILABLE_ROUTE})

enabled = True  # RAINYMODEL_ALERTS; set by the dispatcher at startup (off: nothing is queued)


@dataclass(frozen=True, slots=True)
class QuotaCrossed:
    subject_kind: str  # "key" | "user"
    subject_id: int
    subject_label: str  # a key's prefix, a user's username
    metric: str  # "requests" | "tokens" | "cost"
    threshold: int  # percent
    period: str  # "day" | "month"
    period_start: datetime
    period_end: datetime
    used: float
    maximum: float


@dataclass(frozen=True, slots=True)
class BreakerOpened:
    provider: str
    reason: str
    cooldown_s: float
    at: datetime


@dataclass(frozen=True, slots=True)
class BreakerClosed:
    provider: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AliasFailed:
    alias: str
    error_code: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AliasAnswered:
    alias: str
    at: datetime


Event = QuotaCrossed | BreakerOpened | BreakerClosed | AliasFailed | AliasAnswered

queue: deque[Event] = deque()
wake = threading.Event()
dropped = 0
# Aliases with an incident open (any worker's), refreshed by the dispatcher: only a success on one of these is
# worth an event, so a healthy alias costs one set lookup per call.
failing_aliases: frozenset[str] = frozenset()


def notify(event: Event) -> None:
    """Queue an event for the dispatcher. Never blocks, never raises."""
    global dropped
    if not enabled:
        return
    if len(queue) >= MAX_QUEUED:
        queue.popleft()
        dropped += 1
    queue.append(event)
    wake.set()


def now() -> datetime:
    return datetime.now(UTC)


class _Subject(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> int: ...
    @property
    def label(self) -> str: ...


class _Quota(Protocol):
    """What limits.quotas.Quota offers (typed here, not imported: limits sits floors above this module)."""

    @property
    def subject(self) -> _Subject: ...
    @property
    def period(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def maxima(self) -> dict[str, float]: ...


def quota_used(quota: _Quota, metric: str, used: float, amount: float) -> None:
    """`quota`'s counter of `metric` went from `used - amount` to `used`: queue one event per threshold crossed."""
    maximum = quota.maxima.get(metric)
    if not maximum or amount <= 0 or used * 100 < maximum * THRESHOLDS[0]:  # below 80 %: the usual case, at once
        return
    before = used - amount
    for threshold in THRESHOLDS:
        line = maximum * threshold / 100
        if before < line <= used:
            notify(
                QuotaCrossed(
                    subject_kind=quota.subject.kind,
                    subject_id=quota.subject.id,
                    subject_label=quota.subject.label,
                    metric=metric,
                    threshold=threshold,
                    period=quota.period,
                    period_start=quota.start,
                    period_end=quota.end,
                    used=used,
                    maximum=maximum,
                )
            )


def breaker_opened(provider: str, reason: str, cooldown_s: float) -> None:
    notify(BreakerOpened(provider=provider, reason=reason, cooldown_s=cooldown_s, at=now()))


def breaker_closed(provider: str) -> None:
    notify(BreakerClosed(provider=provider, at=now()))


def call_finished(alias: str | None, status: int, error_code: str) -> None:
    """A call on `alias` ended: every route failed (an alert unless one is open), or it succeeded while an incident
    on the alias is open (which may end it)."""
    if alias is None:
        return
    if status >= 500 and error_code in ALIAS_DOWN_CODES:  # ours: an upstream's 4xx code could read the same
        notify(AliasFailed(alias=alias, error_code=error_code, at=now()))
    elif status < 400 and alias in failing_aliases:
        notify(AliasAnswered(alias=alias, at=now()))
