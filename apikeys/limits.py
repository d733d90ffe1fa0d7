"""Per-key rate limits, concurrency and quotas, and the per-IP limit on failed authentication (SPEC §7).

The request path calls `admit()` before any upstream call and `settle()` exactly once afterwards (in a `finally`);
both run on the event loop and touch only the shared state (`rainymodel_site.shared_state`), never the database,
except for one case: a quota counter that the shared state has lost (Redis flushed or restarted) is rebuilt from
RequestLog in a worker thread, once, and then lives in the shared state again. Keys without limits and the master
key never touch the shared state at all.

Why not django-ratelimit (which SPEC §1 names for `rpm_limit`): its decorator does not support async views, and its
core (`django_ratelimit.core.get_usage`) needs a Django request and calls Django's cache synchronously (`cache.add`
then `cache.incr`), so on the event loop it would block, and off it every call would hop through a thread (Django's
async cache methods serialise on one thread per process). Its algorithm is a fixed window per key, aligned to the
epoch plus a per-key offset, counted with add-then-incr. We count the same way natively with one atomic
`state().incr(key, 1, ttl=60)` (Redis: `INCRBY` + `PEXPIRE NX` in one MULTI), which gives the same guarantee across
workers and machines without a blocking call; the window starts at the key's first request instead of at an
epoch-aligned edge, so a burst that starts at 12:00:59 is not split over two windows (no 2×limit burst at an edge the
client did not choose). django-ratelimit is therefore not imported anywhere; see requirements.txt.

How each limit is counted (all keys below live in the shared state, under `lim:`):
- `rpm_limit`: `lim:rpm:<key id>` counts requests in a 60 s window that starts with the window's first request.
  A request is admitted when its increment is <= the limit, so under any concurrency exactly `rpm_limit` requests
  pass per window. A request refused by a later check gives its count back.
- `tpm_limit`: `lim:tpm:<key id>` sums real tokens (added by `settle`) in a 60 s window. `admit` refuses when the
  tokens already used plus this request's estimate exceed the limit. Requests in flight are not reserved, so
  concurrent requests can overshoot by their own size (bounded by `max_concurrent` when set).
- `max_concurrent`: N slot keys `lim:conc:<key id>:<i>`, each taken with SET NX and a lease of
  `RAINYMODEL_DEADLINE_S` + 60 s (longer than any request may take) and released by `settle`. A worker that dies
  holding slots cannot leak them for longer than the lease; a counter could not offer that (its TTL would run out
  under a busy key and leave it negative).
- Quotas: `lim:quota:<key id>:<period>:<period start>:<metric>` for each metric the quota limits (`requests`,
  `tokens`, `cost`). Requests are counted by `admit` (and refused when over); tokens and cost by `settle`. A quota is
  refused once it is used up (tokens and cost cannot be known before the call, so the last request may overshoot).

Quota counters and the rebuild: a counter is stored as `COUNTER_BASE + used` (i.e. one more than the usage). When a
counter is missing, `admit` aggregates RequestLog for that key and period in a thread and writes it with `add`
(SET NX), so two workers rebuilding at once do not double-count: the second `add` fails and it reads the first's
value. Because every real counter is >= COUNTER_BASE, an increment that *creates* a counter (the store lost it
between `admit` and `settle`) is recognisable (the result equals the amount added) and is deleted again, so the
next `admit` rebuilds the full value from the log instead of trusting a counter that holds only one request.
The log is the source of truth: rows still buffered in the log writer (at most `RAINYMODEL_LOG_FLUSH_S`, 1 s by
default, plus the requests in flight) are not in the database yet, so a rebuild at that moment misses them: a
quota may allow those few requests' usage again, once, right after the shared state was lost. It never counts a
request twice, provided the request path calls `settle()` before it hands the request's log row to the writer.

When the shared state is unreachable every limit fails OPEN, the outage is logged (at most every 10 s per limit),
and the store is left alone for STORE_RETRY_S before the next try (so a silent Redis costs one timeout per 2 s, not
one per request; what `settle` could not write then is lost: slots expire with their lease, quota counters catch
up at their next rebuild): rpm, tpm and concurrency protect capacity over seconds, and refusing every limited key with a misleading
429 would turn a cache outage into an API outage. Quotas fail open too, because their accounting is not lost: the
log keeps every request, and when the store comes back empty the counters are rebuilt from it, including what was
served during the outage. Likewise a failed rebuild (database down) admits the request and retries after 5 s.
The per-IP failed-authentication limit fails open as well (authentication itself still holds).

Must never: query the database on the request path other than that rebuild; block the event loop; raise from
`settle()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings

from rainymodel_site.shared_state import SharedStateUnavailable, state
from rainymodel_site.threads import run_blocking
from routing.snapshot import KeyInfo, QuotaInfo

log = logging.getLogger(__name__)

WINDOW_S = 60  # the rpm/tpm window and the failed-authentication window
COUNTER_BASE = 1  # quota counters hold usage + 1 (see the module docstring)
REBUILD_RETRY_S = 5.0
QUOTA_GRACE_S = 3600  # counters outlive their period this long, for requests admitted just before it ended
CONCURRENCY_RETRY_AFTER_S = 1.0
METRICS = ("requests", "tokens", "cost")

PERIOD_WORDS = {"day": "daily", "month": "monthly"}


def _store():
    """The shared store; a seam so tests can run every limit on their own MemoryState/RedisState."""
    return state()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LimitExceeded(Exception):
    """A limit refused the request: answer 429 with `code`, `type`, `message` and `headers`."""

    status = 429

    def __init__(self, code: str, type: str, message: str, retry_after: float, headers: dict[str, str] | None = None,
                 *, retry_useless: bool = False):
        super().__init__(message)
        self.code = code  # "rate_limit_exceeded" | "quota_exceeded"
        self.type = type  # "requests" | "tokens" | "insufficient_quota"
        self.message = message
        self.retry_after = max(0.0, float(retry_after))
        self.headers = dict(headers or {})
        # Whole seconds for Retry-After (RFC 9110); the openai SDK prefers the precise retry-after-ms.
        self.headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        self.headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        if retry_useless:
            # The openai SDK retries every 429 unless told not to; an exhausted quota or a request larger than the
            # whole tpm limit will not pass on a retry seconds later.
            self.headers["x-should-retry"] = "false"


@dataclass
class Admission:
    """What `admit()` granted. Pass it to `settle()` exactly once, on every path."""

    key: KeyInfo
    headers: dict[str, str] = field(default_factory=dict)
    slot: str | None = None  # the concurrency slot key this request holds
    lease: str | None = None  # the value written into that slot, so settle frees only its own
    # (counter key, metric, ttl) for the quota counters settle adds tokens and cost to
    quota_counters: tuple[tuple[str, str, float], ...] = ()
    settled: bool = False


# --- periods ------------------------------------------------------------------------------------------------------

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


def _quota_counter_key(key_id: int, period: str, start: datetime, metric: str) -> str:
    stamp = start.strftime("%Y-%m-%d") if period == "day" else start.strftime("%Y-%m")
    return f"lim:quota:{key_id}:{period}:{stamp}:{metric}"


def _quota_metrics(quota: QuotaInfo) -> dict[str, float]:
    """The metrics this quota limits, with their maximum."""
    out = {}
    if quota.max_requests is not None:
        out["requests"] = quota.max_requests
    if quota.max_tokens is not None:
        out["tokens"] = quota.max_tokens
    if quota.max_cost_usd is not None:
        out["cost"] = float(quota.max_cost_usd)
    return out


def _rpm_key(key_id) -> str:
    return f"lim:rpm:{key_id}"


def _tpm_key(key_id) -> str:
    return f"lim:tpm:{key_id}"


def _slot_keys(key_id, max_concurrent: int | None) -> list[str]:
    return [f"lim:conc:{key_id}:{i}" for i in range(max_concurrent or 0)]


def _lease_s() -> float:
    return float(settings.RAINYMODEL_DEADLINE_S) + 60.0


# --- logging an unreachable store without flooding the log --------------------------------------------------------

_last_warned: dict[str, float] = {}
# After a failure the store is left alone this long: a silent Redis (no refusal, just a socket timeout) must not
# cost every limited request a timeout or several.
STORE_RETRY_S = 2.0
_store_down_until = 0.0


def _store_is_down() -> bool:
    return time.monotonic() < _store_down_until


def _store_failed(what: str, exc: Exception) -> None:
    global _store_down_until
    now = time.monotonic()
    _store_down_until = now + STORE_RETRY_S
    if now - _last_warned.get(what, -1e9) >= 10.0:
        _last_warned[what] = now
        log.error("shared state unreachable; %s not enforced (failing open): %s", what, exc)


# --- the rebuild from RequestLog ----------------------------------------------------------------------------------

def usage_from_log_sync(key_id: int, start: datetime, end: datetime) -> dict[str, float]:
    """A key's usage in [start, end) according to RequestLog: admitted requests, tokens, cost. Blocking (database);
    call it from a thread, never from the event loop.

    "Admitted" is `RequestLog.admitted`, set by the request path once `admit()` let the call through: the same
    fact the live counter counts and the usage pages show (through the rollups' `admitted`), kept in one place."""
    from django.db.models import Count, F, Q, Sum

    from usage.models import RequestLog

    totals = RequestLog.objects.filter(api_key_id=key_id, created_at__gte=start, created_at__lt=end).aggregate(
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


async def _usage_from_log(key_id: int, start: datetime, end: datetime) -> dict[str, float] | None:
    """`usage_from_log_sync` in a thread, shared by concurrent callers in this process (after a Redis flush a burst
    of requests would otherwise run the same aggregate once each). None when the database failed recently."""
    ident = (key_id, start, end, id(asyncio.get_running_loop()))
    if time.monotonic() - _rebuild_failed_at.get(ident, -1e9) < REBUILD_RETRY_S:
        return None
    task = _rebuilds.get(ident)
    if task is None:
        task = asyncio.ensure_future(run_blocking(usage_from_log_sync, key_id, start, end))
        _rebuilds[ident] = task
        task.add_done_callback(lambda _: _rebuilds.pop(ident, None))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except Exception:
        _rebuild_failed_at[ident] = time.monotonic()
        log.exception("rebuilding quota counters of key %s from the request log failed; quota not enforced", key_id)
        return None


async def _load_quota_counters(store, key: KeyInfo, quota: QuotaInfo, start, end, values: dict, now) -> None:
    """Make sure this quota's counters exist (rebuilding the missing ones from the log) and put them in `values`."""
    missing = {
        metric: _quota_counter_key(key.id, quota.period, start, metric)
        for metric in _quota_metrics(quota)
        if _quota_counter_key(key.id, quota.period, start, metric) not in values
    }
    if not missing:
        return
    usage = await _usage_from_log(key.id, start, end)
    if usage is None:
        return
    ttl = (end - now).total_seconds() + QUOTA_GRACE_S
    for metric, counter in missing.items():
        initial = COUNTER_BASE + usage[metric]
        if await store.add(counter, initial, ttl):
            log.info("rebuilt quota counter %s from the request log: %s", counter, usage[metric])
            values[counter] = initial
        else:  # another worker rebuilt it first; its value is as good as ours and already counting
            current = await store.get(counter)
            values[counter] = initial if current is None else current


async def _add_to_quota_counter(store, counter: str, amount: float, ttl: float) -> float | None:
    """Add to a quota counter that must already exist. Returns the new usage, or None when the counter had been
    lost (then it is removed again, and the next admit rebuilds it from the log)."""
    value = await store.incr(counter, amount, ttl)
    if not isinstance(value, (int, float)) or value - amount < COUNTER_BASE / 2:
        await store.delete(counter)
        return None
    return value - COUNTER_BASE


# --- headers ------------------------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` format (Go's duration format): "0.5s", "1s", "6m0s", "1h2m3s"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def _wait_words(seconds: float) -> str:
    """How long to wait, for people reading an error message: "45s", "6m0s", "11h46m", "3d4h"."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return _duration(seconds)
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d{hours}h" if days else f"{hours}h{minutes}m"


@dataclass
class _Seen:
    """What admit learned about the key's usage, for the x-ratelimit-* headers."""

    rpm_count: int | None = None
    rpm_reset: float | None = None
    tpm_used: int | None = None
    tpm_reset: float | None = None
    # counter key -> (metric, max, used, seconds to period end), for each quota metric
    quotas: dict[str, tuple[str, float, float, float]] = field(default_factory=dict)


def _headers(key: KeyInfo, seen: _Seen) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens}: from rpm/tpm when set, else from the tightest quota."""
    headers: dict[str, str] = {}
    for kind, limit, used, reset, metric in (
        ("requests", key.rpm_limit, seen.rpm_count, seen.rpm_reset, "requests"),
        ("tokens", key.tpm_limit, seen.tpm_used, seen.tpm_reset, "tokens"),
    ):
        if limit:
            used = used or 0
            reset = WINDOW_S if reset is None and used else (reset or 0)
        else:
            candidates = [(maximum - u, maximum, u, r) for m, maximum, u, r in seen.quotas.values() if m == metric]
            if not candidates:
                continue
            _, limit, used, reset = min(candidates)
        headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(limit - used)))
        headers[f"x-ratelimit-reset-{kind}"] = _duration(reset)
    return headers


def _refusal_headers(headers: dict[str, str], kind: str, limit: float | None, reset: float,
                     remaining: float = 0) -> dict[str, str]:
    """`headers` with the `kind` ("requests"/"tokens") triple replaced by the limit that refused the request, so
    a 429 never advertises an allowance the key cannot use (a quota 429 showing the full rpm allowance)."""
    headers = dict(headers)
    if limit is not None:
        headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
    headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(remaining)))
    headers[f"x-ratelimit-reset-{kind}"] = _duration(reset)
    return headers


# --- admit and settle ---------------------------------------------------------------------------------------------

async def admit(key: KeyInfo, *, estimated_tokens: int) -> Admission:
    """Check and take this key's limits for one request. Raises LimitExceeded (always 429).

    Checks, in order: quotas (used up?), tpm (tokens used + `estimated_tokens` over the limit?), rpm (counts this
    request), quota requests (counts this request), max_concurrent (takes a slot). What was taken before a refusal
    is given back. Keys without limits and the master key return at once, without touching the shared state.
    """
    admission = Admission(key=key)
    if key.is_master or not key.has_limits or _store_is_down():
        return admission
    seen = _Seen()
    store = _store()
    try:
        await _admit(store, admission, seen, max(0, int(estimated_tokens or 0)))
    except SharedStateUnavailable as exc:
        _store_failed(f"limits of key {key.prefix}", exc)
    except asyncio.CancelledError:
        # The client left while we were admitting it: nobody will settle this admission, so free its slot now.
        if admission.slot:
            await asyncio.shield(asyncio.ensure_future(_settle(admission, 0, 0.0)))
        raise
    admission.headers = _headers(key, seen)
    return admission


async def _admit(store, admission: Admission, seen: _Seen, estimate: int) -> None:
    key = admission.key
    now = _utcnow()
    quotas = [(q, *period_bounds(q.period, now)) for q in key.quotas]
    rpm_key, tpm_key = _rpm_key(key.id), _tpm_key(key.id)
    slot_keys = _slot_keys(key.id, key.max_concurrent)
    wanted = [rpm_key, tpm_key, *slot_keys]
    for quota, start, _ in quotas:
        wanted += [_quota_counter_key(key.id, quota.period, start, m) for m in _quota_metrics(quota)]
    values = await store.get_many(wanted)

    # Quotas: is anything used up?
    quota_requests: list[tuple[str, float, float, str, float]] = []  # counter, max, ttl, period, seconds to end
    counters = []
    for quota, start, end in quotas:
        await _load_quota_counters(store, key, quota, start, end, values, now)
        to_end = (end - now).total_seconds()
        for metric, maximum in _quota_metrics(quota).items():
            counter = _quota_counter_key(key.id, quota.period, start, metric)
            if counter not in values:  # could not be rebuilt: fail open for this metric
                continue
            used = values[counter] - COUNTER_BASE
            seen.quotas[counter] = (metric, maximum, used, to_end)
            ttl = to_end + QUOTA_GRACE_S
            if metric == "requests":
                quota_requests.append((counter, maximum, ttl, quota.period, to_end))
            else:
                counters.append((counter, metric, ttl))
            if used >= maximum:
                raise _quota_exceeded(key, quota.period, metric, maximum, to_end, seen)
    admission.quota_counters = tuple(counters)

    # tpm: tokens already used in this window plus this request's estimate.
    if key.tpm_limit:
        seen.tpm_used = int(values.get(tpm_key) or 0)
        if estimate > key.tpm_limit or seen.tpm_used + estimate > key.tpm_limit:
            seen.tpm_reset = await store.ttl(tpm_key) or WINDOW_S
            if estimate > key.tpm_limit:
                message = (f"Request too large: about {estimate} tokens, more than this key's limit of "
                           f"{key.tpm_limit} tokens per minute.")
            else:
                message = (f"Rate limit reached: {seen.tpm_used} of {key.tpm_limit} tokens per minute used; this "
                           f"request needs about {estimate} more. Try again in {_wait_words(seen.tpm_reset)}.")
            raise LimitExceeded("rate_limit_exceeded", "tokens", message, seen.tpm_reset,
                                _refusal_headers(_headers(key, seen), "tokens", key.tpm_limit, seen.tpm_reset,
                                                 key.tpm_limit - seen.tpm_used),
                                retry_useless=estimate > key.tpm_limit)

    taken: list = []  # what to give back if a later check refuses
    try:
        # rpm: this request's increment must stay within the limit.
        if key.rpm_limit:
            count = int(values.get(rpm_key) or 0)
            full = count >= key.rpm_limit  # already used up: refuse without counting
            if not full:
                # One store call at a time per request: redis.asyncio's pool refuses (rather than queues) past 100
                # connections per worker, so a burst must not multiply its connections.
                count = int(await store.incr(rpm_key, 1, WINDOW_S))
                reset = await store.ttl(rpm_key)
                full = count > key.rpm_limit
            else:
                reset = await store.ttl(rpm_key)
            seen.rpm_count, seen.rpm_reset = count, reset or WINDOW_S
            if full:
                raise LimitExceeded(
                    "rate_limit_exceeded", "requests",
                    f"Rate limit reached: {key.rpm_limit} requests per minute. "
                    f"Try again in {_wait_words(seen.rpm_reset)}.",
                    seen.rpm_reset, _refusal_headers(_headers(key, seen), "requests", key.rpm_limit, seen.rpm_reset))
            taken.append(("rpm", rpm_key))
        if key.tpm_limit:
            seen.tpm_reset = await store.ttl(tpm_key) if seen.tpm_used else 0

        # Quota requests: count this one; over the maximum -> give it back.
        for counter, maximum, ttl, period, to_end in quota_requests:
            used = await _add_to_quota_counter(store, counter, 1, ttl)
            if used is None:  # lost since we read it; the next request rebuilds it
                continue
            taken.append(("quota", counter, ttl))
            seen.quotas[counter] = ("requests", maximum, used, to_end)
            if used > maximum:
                raise _quota_exceeded(key, period, "requests", maximum, to_end, seen)

        # Concurrency: take a free slot.
        if slot_keys:
            lease = "lease-" + secrets.token_hex(8)  # not number-like, so Redis gives it back as the same str
            for slot in (s for s in slot_keys if s not in values):
                if await store.add(slot, lease, _lease_s()):
                    admission.slot, admission.lease = slot, lease
                    break
            else:
                raise LimitExceeded(
                    "rate_limit_exceeded", "requests",
                    f"Too many concurrent requests: this key allows {key.max_concurrent} at a time.",
                    CONCURRENCY_RETRY_AFTER_S,
                    _refusal_headers(_headers(key, seen), "requests", None, CONCURRENCY_RETRY_AFTER_S))
    except LimitExceeded:
        await _give_back(store, taken)
        raise


async def _give_back(store, taken: list) -> None:
    for item in reversed(taken):
        try:
            if item[0] == "rpm":
                value = await store.incr(item[1], -1, WINDOW_S)
                if value is not None and value < 0:  # the window ended meanwhile; do not start one at -1
                    await store.delete(item[1])
            else:
                await _add_to_quota_counter(store, item[1], -1, item[2])
        except SharedStateUnavailable as exc:
            _store_failed("giving back a refused request's counts", exc)
            return


def _quota_exceeded(key: KeyInfo, period: str, metric: str, maximum: float, to_end: float, seen: _Seen):
    what = {"requests": f"{int(maximum)} requests", "tokens": f"{int(maximum)} tokens",
            "cost": f"${maximum:g}"}[metric]
    return LimitExceeded(
        "quota_exceeded", "insufficient_quota",
        f"You exceeded this key's {PERIOD_WORDS.get(period, period)} quota of {what}. "
        f"It resets in {_wait_words(to_end)} (UTC {period} boundary).",
        to_end, _refusal_headers(_headers(key, seen), "tokens" if metric == "tokens" else "requests",
                                 None if metric == "cost" else maximum, to_end),
        retry_useless=True)


async def settle(admission: Admission, *, tokens: int, cost_usd: float) -> None:
    """Count the request's real tokens and cost, and free its concurrency slot. Idempotent; never raises
    (shared-state errors are logged). Survives the caller's cancellation: the work runs to the end."""
    if admission.settled:
        return
    admission.settled = True
    key = admission.key
    if key.is_master or not key.has_limits:
        return
    task = asyncio.ensure_future(_settle(admission, max(0, int(tokens or 0)), max(0.0, float(cost_usd or 0))))
    await asyncio.shield(task)


async def _settle(admission: Admission, tokens: int, cost: float) -> None:
    store = _store()
    key = admission.key
    steps = []  # sequential (one connection per request, see _admit); each step on its own, so one failure skips none
    if admission.slot:
        steps.append(lambda: _release_slot(store, admission.slot, admission.lease))
    if tokens and key.tpm_limit:
        steps.append(lambda: store.incr(_tpm_key(key.id), tokens, WINDOW_S))
    for counter, metric, ttl in admission.quota_counters:
        amount = tokens if metric == "tokens" else cost
        if amount:
            steps.append(lambda counter=counter, amount=amount, ttl=ttl:
                         _add_to_quota_counter(store, counter, amount, ttl))
    for step in steps:
        if _store_is_down():  # what is left is lost: leases expire, quotas are recounted from the log when rebuilt
            return
        try:
            await step()
        except SharedStateUnavailable as exc:
            _store_failed(f"settling usage of key {key.prefix}", exc)
        except Exception:
            log.exception("settling usage of key %s failed", key.prefix)


async def _release_slot(store, slot: str, lease: str) -> None:
    # Only our own lease: if this request outlived it, the slot may belong to another request by now.
    if await store.get(slot) == lease:
        await store.delete(slot)


# --- failed authentication per client IP --------------------------------------------------------------------------

def _auth_failure_key(client_ip: str | None) -> str:
    return "lim:authfail:" + (client_ip or "unknown")[:64]


async def check_auth_failures(client_ip: str) -> None:
    """Raise LimitExceeded when this IP already had RAINYMODEL_AUTH_FAILURES_PER_MIN failed authentications in the
    current 60 s window (which starts at its first failure). With the flow's order (on a failed authentication:
    check, then record) an IP gets that many 401s per window, then 429s until the window ends."""
    limit = settings.RAINYMODEL_AUTH_FAILURES_PER_MIN
    if not limit or _store_is_down():
        return
    store = _store()
    counter = _auth_failure_key(client_ip)
    try:
        failures = int(await store.get(counter) or 0)
        if failures < limit:
            return
        reset = await store.ttl(counter) or WINDOW_S
    except SharedStateUnavailable as exc:
        _store_failed("failed-authentication limit", exc)
        return
    raise LimitExceeded(
        "rate_limit_exceeded", "requests",
        f"Too many failed authentication attempts from your address. Try again in {_wait_words(reset)}.",
        reset, _refusal_headers({}, "requests", limit, reset))


async def record_auth_failure(client_ip: str) -> None:
    """Count one failed authentication for this IP (never raises)."""
    if _store_is_down():
        return
    try:
        await _store().incr(_auth_failure_key(client_ip), 1, WINDOW_S)
    except SharedStateUnavailable as exc:
        _store_failed("failed-authentication limit", exc)


# --- the admin's view ---------------------------------------------------------------------------------------------

def usage_for_key_sync(key_id: int) -> dict:
    """A key's limits, its current usage against each limit and quota, and its last use, for the admin.

    Blocking (database and shared state): admin pages and commands only. Missing quota counters are rebuilt from
    the log exactly as the request path would (SET NX), so looking at a key never double-counts it. When the shared
    state is unreachable, quota usage comes from the log and `shared_state_error` says why the rest is missing.
    """
    from apikeys.models import APIKey

    api_key = APIKey.objects.prefetch_related("quotas").get(pk=key_id)
    now = _utcnow()
    store = _store()
    out = {
        "key_id": api_key.id,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "last_used_at": api_key.last_used_at,
        "limits": {"rpm_limit": api_key.rpm_limit, "tpm_limit": api_key.tpm_limit,
                   "max_concurrent": api_key.max_concurrent},
        "current": None,  # {"requests_this_minute", "tokens_this_minute", "in_flight"}
        "quotas": [],
        "shared_state_error": None,
    }
    slots = _slot_keys(api_key.id, api_key.max_concurrent)
    try:
        values = store.get_many_sync([_rpm_key(api_key.id), _tpm_key(api_key.id), *slots])
        out["current"] = {
            "requests_this_minute": int(values.get(_rpm_key(api_key.id)) or 0),
            "tokens_this_minute": int(values.get(_tpm_key(api_key.id)) or 0),
            "in_flight": sum(1 for s in slots if s in values),
        }
    except SharedStateUnavailable as exc:
        out["shared_state_error"] = str(exc)

    for quota in sorted(api_key.quotas.all(), key=lambda q: q.period):
        start, end = period_bounds(quota.period, now)
        maxima = {"requests": quota.max_requests, "tokens": quota.max_tokens,
                  "cost": None if quota.max_cost_usd is None else float(quota.max_cost_usd)}
        used = _quota_usage_sync(store, api_key.id, quota.period, start, end, maxima, now, out)
        out["quotas"].append({
            "period": quota.period, "period_start": start, "resets_at": end,
            **{metric: {"used": used[metric], "max": maxima[metric]} for metric in METRICS},
        })
    return out


def _quota_usage_sync(store, key_id, period, start, end, maxima, now, out) -> dict[str, float]:
    counters = {m: _quota_counter_key(key_id, period, start, m) for m in METRICS}
    from_log = None
    values = {}
    if out["shared_state_error"] is None:
        try:
            values = store.get_many_sync([counters[m] for m in METRICS if maxima[m] is not None])
        except SharedStateUnavailable as exc:
            out["shared_state_error"] = str(exc)
    used = {}
    for metric in METRICS:
        counter = counters[metric]
        if maxima[metric] is not None and counter in values:
            used[metric] = values[counter] - COUNTER_BASE
            continue
        if from_log is None:
            from_log = usage_from_log_sync(key_id, start, end)
        used[metric] = from_log[metric]
        if maxima[metric] is not None and out["shared_state_error"] is None:
            try:  # warm the counter as admit would, so the next request does not rebuild it again
                store.add_sync(counter, COUNTER_BASE + from_log[metric], (end - now).total_seconds() + QUOTA_GRACE_S)
            except SharedStateUnavailable as exc:
                out["shared_state_error"] = str(exc)
    return used
