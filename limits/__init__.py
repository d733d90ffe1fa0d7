"""Per-key rate limits, concurrency and quotas, and the per-IP limit on failed authentication (SPEC §7).

Above apikeys, routing and usage: limits read keys (apikeys), config (routing) and, for the quota
rebuild, the request log (usage); nothing below imports them.

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
client did not choose). django-ratelimit therefore throttles only sync pages (login, usage pages and CSV exports).

The limits are small objects sharing one interface (`base.Limit`: check / reserve / give back / settle), one
module each: `rate` (rpm), `tokens` (tpm), `concurrency`, `quotas` (with the rebuild from RequestLog), and
`auth_failures` (per IP, checked before a key is known). `admit` is a loop over the subject's limits; a user's
limits (issue 14) plug into the same loop as another `Subject`.

When the shared state is unreachable every limit fails OPEN, the outage is logged (at most every 10 s per limit),
and the store is left alone for `base.STORE_RETRY_S` before the next try (one `shared_state.Outage`; a silent
Redis costs one timeout per 2 s, not one per request; what `settle` could not write then is lost: slots expire with
their lease, quota counters catch up at their next rebuild): rpm, tpm and concurrency protect capacity over seconds,
and refusing every limited key with a misleading 429 would turn a cache outage into an API outage. Quotas fail
open too, because their accounting is not lost: the log keeps every request, and when the store comes back empty the
counters are rebuilt from it, including what was served during the outage. Likewise a failed rebuild (database
down) admits the request and retries after 5 s. The per-IP failed-authentication limit fails open as well
(authentication itself still holds).

Must never: query the database on the request path other than that rebuild; block the event loop; raise from
`settle()`.
"""

from __future__ import annotations

import asyncio

from limits import base
from limits.auth_failures import check_auth_failures, record_auth_failure
from limits.base import Admission, Limit, LimitExceeded, Subject, headers, store_failed
from limits.concurrency import Concurrency
from limits.quotas import METRICS, Quota, period_bounds, usage_from_log_sync
from limits.rate import Rate
from limits.tokens import Tokens
from rainymodel_site.shared_state import SharedStateUnavailable
from routing.snapshot import KeyInfo, UserLimitsInfo

__all__ = [
    "Admission",
    "LimitExceeded",
    "METRICS",
    "admit",
    "check_auth_failures",
    "limits_of_key",
    "period_bounds",
    "record_auth_failure",
    "settle",
    "usage_from_log_sync",
]


def key_subject(key: KeyInfo) -> Subject:
    assert key.id is not None, "the master key has no limits"
    return Subject("key", key.id, key.prefix)


def user_subject(owner: UserLimitsInfo) -> Subject:
    return Subject("user", owner.user_id, owner.username)


def _limits_of(subject: Subject, holder: KeyInfo | UserLimitsInfo, estimated_tokens: int, now) -> list[Limit]:
    limits: list[Limit] = [Quota(subject, quota, now) for quota in holder.quotas]
    if holder.tpm_limit:
        limits.append(Tokens(subject, holder.tpm_limit, estimated_tokens))
    if holder.rpm_limit:
        limits.append(Rate(subject, holder.rpm_limit))
    if holder.max_concurrent:
        limits.append(Concurrency(subject, holder.max_concurrent))
    return limits


def limits_of_key(key: KeyInfo, *, estimated_tokens: int, now) -> list[Limit]:
    """A key's limits for one request, then its owner's (shared by all the owner's keys), in the order admit checks
    them: quotas (used up?), then tpm (tokens used + the estimate over the limit?); rpm and concurrency check nothing
    before they reserve."""
    limits = _limits_of(key_subject(key), key, estimated_tokens, now)
    if key.owner_limits is not None:
        limits += _limits_of(user_subject(key.owner_limits), key.owner_limits, estimated_tokens, now)
    return limits


async def admit(key: KeyInfo, *, estimated_tokens: int) -> Admission:
    """Check and take this key's limits for one request. Raises LimitExceeded (always 429).

    Checks, in order: quotas (used up?), tpm (tokens used + `estimated_tokens` over the limit?), rpm (counts this
    request), quota requests (counts this request), max_concurrent (takes a slot). What was taken before a refusal
    is given back. Keys without limits and the master key return at once, without touching the shared state.
    """
    admission = Admission(key=key)
    if key.is_master or not key.has_limits or base.outage.skip():
        return admission
    admission.limits = tuple(limits_of_key(key, estimated_tokens=max(0, int(estimated_tokens or 0)), now=base.utcnow()))
    try:
        await _admit(base.store(), admission)
    except SharedStateUnavailable as exc:
        store_failed(f"limits of key {key.prefix}", exc)
    except asyncio.CancelledError:
        # The client left while we were admitting it: nobody will settle this admission, so free what it holds now.
        await asyncio.shield(asyncio.ensure_future(_settle(admission, 0, 0.0)))
        raise
    admission.headers = headers(admission.limits)
    return admission


async def _admit(store, admission: Admission) -> None:
    """The loop: one read of every counter, then check each limit, then reserve each (rpm, tpm, quota requests,
    concurrency); on a refusal, what was reserved is given back, newest first."""
    values = await store.get_many([c for limit in admission.limits for c in limit.counters()])
    for limit in admission.limits:
        try:
            await limit.check(store, values, admission)
        except LimitExceeded as exc:
            raise _scoped(exc, limit) from None
    reserved: list[Limit] = []
    try:
        for limit in sorted(admission.limits, key=lambda limit: limit.reserve_rank):
            try:
                if await limit.reserve(store, values, admission):
                    reserved.append(limit)
            except LimitExceeded as exc:
                raise _scoped(exc, limit) from None
    except LimitExceeded:
        for limit in reversed(reserved):
            try:
                await limit.give_back(store)
            except SharedStateUnavailable as exc:
                store_failed("giving back a refused request's counts", exc)
                break
        raise


def _scoped(exc: LimitExceeded, limit: Limit) -> LimitExceeded:
    """Say in the headers whose limit refused: `x-ratelimit-scope: key` or `user` (the message says it in words)."""
    exc.headers["x-ratelimit-scope"] = limit.subject.kind
    exc.kind, exc.scope = limit.kind, limit.subject.kind
    return exc


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
    store = base.store()
    # Sequential (one connection per request), the slot first; each limit on its own, so one failure skips none.
    for limit in sorted(admission.limits, key=lambda limit: -limit.reserve_rank):
        if base.outage.skip():  # what is left is lost: leases expire, quotas are recounted from the log when rebuilt
            return
        try:
            await limit.settle(store, tokens, cost)
        except SharedStateUnavailable as exc:
            store_failed(f"settling usage of key {admission.key.prefix}", exc)
        except Exception:
            base.log.exception("settling usage of key %s failed", admission.key.prefix)
