"""Quotas: requests, tokens and cost per UTC day or month, and their rebuild from RequestLog after a Redis loss.

`lim:quota:<subject>:<period>:<period start>:<metric>` for each metric a quota limits (`requests`, `tokens`,
`cost`). Requests are counted by `admit` (and refused when over); tokens and cost by `settle`. A quota is refused
once it is used up (tokens and cost cannot be known before the call, so the last request may overshoot).

A counter is stored as `COUNTER_BASE + used` (one more than the usage). When a counter is missing, `admit`
aggregates RequestLog for that key and period in a thread and writes it with `add` (SET NX), so two workers
rebuilding at once do not double-count: the second `add` fails and it reads the first's value. Because every real
counter is >= COUNTER_BASE, an increment that *creates* a counter (the store lost it between `admit` and `settle`)
is recognisable (the result equals the amount added) and is deleted again, so the next `admit` rebuilds the full
value from the log instead of trusting a counter that holds only one request. The log is the source of truth; see
docs/limits.md for the one window in which a rebuild can miss rows the log writer has not flushed yet.

The only database access of the limits: the rebuild, in a worker thread, once per lost counter."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from alerts import events as alerts
from limits import base
from limits.base import Limit, LimitExceeded, Subject, headers, log, refusal_headers, store_failed, wait_words
from rainymodel_site.shared_state import SharedStateUnavailable
from rainymodel_site.threads import run_blocking
from routing.snapshot import QuotaInfo

COUNTER_BASE = 1  # quota counters hold usage + 1 (see the module docstring)
REBUILD_RETRY_S = 5.0
QUOTA_GRACE_S = 3600  # counters outlive their period this long, for requests admitted just before it ended
METRICS = ("requests", "tokens", "cost")
PERIOD_WORDS = {"day": "daily", "month": "monthly"}


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar day or month containing `now`: (start, end)."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown quota period {period!r}")


def quota_counter(counter_id, period: str, start: datetime, metric: str) -> str:
    """The counter of one metric of one period; `counter_id` is `Subject.counter_id` (a key's id)."""
    stamp = start.strftime("%Y-%m-%d") if period == "day" else start.strftime("%Y-%m")
    return f"lim:quota:{counter_id}:{period}:{stamp}:{metric}"


def quota_metrics(quota: QuotaInfo) -> dict[str, float]:
    """The metrics this quota limits, with their maximum."""
    out: dict[str, float] = {}
    if quota.max_requests is not None:
        out["requests"] = quota.max_requests
    if quota.max_tokens is not None:
        out["tokens"] = quota.max_tokens
    if quota.max_cost_usd is not None:
        out["cost"] = float(quota.max_cost_usd)
    return out


# --- the rebuild from RequestLog ----------------------------------------------------------------------------------


def usage_from_log_sync(key_id: int, start: datetime, end: datetime, user_id: int | None = None) -> dict[str, float]:
    """A key's usage in [start, end) according to RequestLog: admitted requests, tokens, cost. Blocking (database);
    call it from a thread, never from the event loop. With `user_id` (and `key_id` ignored): the usage of all the
    keys that user owns now, for the user's quotas.

    "Admitted" is `RequestLog.admitted`, set by the request path once `admit()` let the call through: the same
    fact the live counter counts and the usage pages show (through the rollups' `admitted`), kept in one place."""
    from django.db.models import Count, F, Q, Sum

    from usage.models import RequestLog

    rows = RequestLog.objects.filter(created_at__gte=start, created_at__lt=end)
    if user_id is None:
        rows = rows.filter(api_key_id=key_id)
    else:
        from apikeys.models import APIKey

        rows = rows.filter(api_key_id__in=APIKey.objects.filter(owner_id=user_id).values("id"))
    totals = rows.aggregate(
        requests=Count("id", filter=Q(admitted=True)),
        tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
        cost=Sum("cost_usd"),
    )
    return {
        "requests": int(totals["requests"] or 0),
        "tokens": int(totals["tokens"] or 0),
        "cost": float(totals["cost"] or 0),
    }


_rebuilds: dict[tuple, asyncio.Future] = {}
_rebuild_failed_at: dict[tuple, float] = {}


async def usage_from_log(subject: Subject, start: datetime, end: datetime) -> dict[str, float] | None:
    """`usage_from_log_sync` in a thread, shared by concurrent callers in this process (after a Redis flush a burst
    of requests would otherwise run the same aggregate once each). None when the database failed recently."""
    ident = (subject.counter_id, start, end, id(asyncio.get_running_loop()))
    key_id = subject.id if subject.kind == "key" else 0
    user_id = subject.id if subject.kind == "user" else None
    if time.monotonic() - _rebuild_failed_at.get(ident, -1e9) < REBUILD_RETRY_S:
        return None
    task = _rebuilds.get(ident)
    if task is None:
        task = asyncio.ensure_future(run_blocking(usage_from_log_sync, key_id, start, end, user_id))
        _rebuilds[ident] = task
        task.add_done_callback(lambda _: _rebuilds.pop(ident, None))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except Exception:
        _rebuild_failed_at[ident] = time.monotonic()
        log.exception(
            "rebuilding quota counters of %s %s from the request log failed; quota not enforced",
            subject.kind,
            subject.label,
        )
        return None


async def add_to_counter(store, counter: str, amount: float, ttl: float) -> float | None:
    """Add to a quota counter that must already exist. Returns the new usage, or None when the counter had been
    lost (then it is removed again, and the next admit rebuilds it from the log)."""
    value = await store.incr(counter, amount, ttl)
    if not isinstance(value, (int, float)) or value - amount < COUNTER_BASE / 2:
        await store.delete(counter)
        return None
    return value - COUNTER_BASE


# --- the limit ----------------------------------------------------------------------------------------------------


class Quota(Limit):
    """One quota (one period) of a subject, with each metric it limits."""

    reserve_rank = 2
    kind = "quota"

    def __init__(self, subject: Subject, quota: QuotaInfo, now: datetime):
        self.subject, self.period, self.now = subject, quota.period, now
        self.start, self.end = period_bounds(quota.period, now)
        self.to_end = (self.end - now).total_seconds()
        self.ttl = self.to_end + QUOTA_GRACE_S
        self.maxima = quota_metrics(quota)
        self.counter = {m: quota_counter(subject.counter_id, quota.period, self.start, m) for m in self.maxima}
        self.used: dict[str, float] = {}  # metric -> usage seen (only the metrics whose counter exists)
        self.counted_request = False

    def counters(self):
        return list(self.counter.values())

    async def check(self, store, values, admission) -> None:
        await self._load(store, values)
        for metric, maximum in self.maxima.items():
            if self.counter[metric] not in values:  # could not be rebuilt: fail open for this metric
                continue
            self.used[metric] = values[self.counter[metric]] - COUNTER_BASE
            if self.used[metric] >= maximum:
                raise self._exceeded(metric, admission)

    async def _load(self, store, values: dict) -> None:
        """Make sure the counters exist (rebuilding the missing ones from the log) and put them in `values`."""
        missing = {m: c for m, c in self.counter.items() if c not in values}
        if not missing:
            return
        usage = await usage_from_log(self.subject, self.start, self.end)
        if usage is None:
            return
        for metric, counter in missing.items():
            initial = COUNTER_BASE + usage[metric]
            if await store.add(counter, initial, self.ttl):
                log.info("rebuilt quota counter %s from the request log: %s", counter, usage[metric])
                values[counter] = initial
            else:  # another worker rebuilt it first; its value is as good as ours and already counting
                current = await store.get(counter)
                values[counter] = initial if current is None else current

    async def reserve(self, store, values, admission) -> bool:
        """Count this request against `requests`; over the maximum -> refused (and given back by admit)."""
        if "requests" not in self.used:
            return False
        used = await add_to_counter(store, self.counter["requests"], 1, self.ttl)
        if used is None:  # lost since we read it; the next request rebuilds it
            return False
        self.counted_request = True
        self.used["requests"] = used
        alerts.quota_used(self, "requests", used, 1)
        if used > self.maxima["requests"]:
            refusal = self._exceeded("requests", admission)
            try:  # a refused request is not counted (admit gives back only the limits reserved before this one)
                await self.give_back(store)
            except SharedStateUnavailable as exc:
                store_failed("giving back a refused request's counts", exc)
            raise refusal
        return True

    async def give_back(self, store) -> None:
        if self.counted_request:
            self.counted_request = False
            await add_to_counter(store, self.counter["requests"], -1, self.ttl)

    async def settle(self, store, tokens: int, cost: float) -> None:
        # Each counter on its own, so one failure skips none; only counters that existed at admit (the others are
        # rebuilt from the log, which will hold this request).
        for metric in ("tokens", "cost"):
            amount = tokens if metric == "tokens" else cost
            if metric not in self.used or not amount:
                continue
            if base.outage.skip():
                return
            try:
                used = await add_to_counter(store, self.counter[metric], amount, self.ttl)
                if used is not None:
                    alerts.quota_used(self, metric, used, amount)
            except SharedStateUnavailable as exc:
                store_failed(f"settling usage of key {self.subject.label}", exc)

    def _exceeded(self, metric: str, admission) -> LimitExceeded:
        maximum = self.maxima[metric]
        what = {"requests": f"{int(maximum)} requests", "tokens": f"{int(maximum)} tokens", "cost": f"${maximum:g}"}[
            metric
        ]
        return LimitExceeded(
            "quota_exceeded",
            "insufficient_quota",
            f"You exceeded {self.subject.whose} {PERIOD_WORDS.get(self.period, self.period)} quota of {what}. "
            f"It resets in {wait_words(self.to_end)} (UTC {self.period} boundary).",
            self.to_end,
            refusal_headers(
                headers(admission.limits),
                "tokens" if metric == "tokens" else "requests",
                None if metric == "cost" else maximum,
                self.to_end,
            ),
            retry_useless=True,
        )

    def usages(self):
        return [(m, self.maxima[m], used, self.to_end, False) for m, used in self.used.items()]
