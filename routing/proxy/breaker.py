"""Circuit breaker per route, and per provider for failures that concern the whole provider (SPEC §6).

closed → open after `breaker_failures` consecutive failed attempts → skipped for the cooldown
(`breaker_cooldown_s`; credits exhausted: `credit_cooldown_s`; a long 429: its `Retry-After`) → half-open, where
exactly one request across all workers and machines probes (an atomic claim in the shared store) → a successful
probe closes the breaker, a failed one opens it for another cooldown of the same length.

The breaker's state, its pure transitions, its keys in the shared store and the admin/health readers and reset
live one floor down, in routing/breakers.py. This module is the request path's side: the functions the flow and
the relay call (`usable_routes`, `try_acquire`, `record_success`, `record_failure`), over the shared store
(`rainymodel_site.shared_state`), so every worker agrees.

This module must never touch the database or httpx, and on the request path it must stay cheap: building a chain
costs one shared-state round trip for all its breakers, and a request on a healthy route costs nothing more
(the states read for the chain are remembered for a moment, so `try_acquire` and `record_success` need no
round trip while the breaker is closed and clean). When the shared store is unreachable the breaker fails open:
every route is tried, as if there were no breaker, and that is logged once.

Whose failure is it (SPEC §6, docs/shared-state.md "One key cannot switch off a shared upstream"): a route
failure that the request's content may have caused (any route-scope reason except an at-once 429) is attributed
to the API key that sent it. The key gets its own *key breaker* on that route, `breaker:route:<id>:key:<key>`,
which opens after `breaker_failures` of that key's consecutive failures and takes the route out for that key
only. The route breaker, shared by everyone, counts the run of failures since the last success from anyone and
opens after `breaker_failures` only when the run is outage evidence: failures from at least two keys, or from a
key that is the only one to have used the route in the last `ACTIVE_WINDOW_S` (a single-tenant deployment, or an
outage noticed by the only active customer). Which keys use a route is kept in `breaker:route:<id>:active`,
marked when a chain is built (at most every `ACTIVE_MARK_S` per key, route and process). Failures are written
with a compare-and-set over the route and key breakers, so two processes cannot both miss the threshold.

Times are epoch seconds (`time.time()`) because they are compared across machines; keep clocks in sync (NTP).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from alerts import events as alerts
from rainymodel_site.shared_state import Outage, SharedStateUnavailable, state
from routing import breakers
from routing.breakers import (
    ACTIVE_MARK_S,
    ACTIVE_WINDOW_S,
    CLIENT_ERROR_REASONS,
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerState,
    activity_key,
    decode,
    decode_activity,
    encode,
    key_breaker_key,
    key_token,
    mark_active,
    on_failure,
    on_success,
    others_active,
    plan_failure,
    provider_key,
    route_key,
    seconds_until_half_open,
    status_at,
)

if TYPE_CHECKING:
    from routing.snapshot import KeyInfo, ProviderInfo, RouteInfo

log = logging.getLogger(__name__)

# A compare-and-set that lost a race reads again after a short random pause; every round has a winner, so this many
# tries outlast that many simultaneous failures on one breaker (far more than an outage produces in a millisecond).
CAS_TRIES = 32
CAS_PAUSE_S = 0.002


# --- the shared store --------------------------------------------------------------------------------------------

# How long a state read for the chain may stand in for the store in `try_acquire` / `record_success` of the same
# request. Short: the only cost of staleness is one extra attempt on a route another worker has just opened, or one
# skipped "close" write, which the next probe repairs.
SEEN_FRESH_S = 1.0
# Breaker keys outlive their opening by a day, so state of deleted routes/providers cleans itself up.
STATE_TTL_S = 86400.0

# After the store failed, the request path leaves it alone this long: a black-holed Redis would otherwise cost every
# request a socket timeout per breaker call, not just the first.
STORE_RETRY_S = 2.0

_outage = Outage(STORE_RETRY_S)


def _probe_key(key: str, st: BreakerState) -> str:
    # One claim slot per opening: a claim can never be confused with the next cooldown's probe.
    return f"{key}:probe:{st.open_until!r}"


def _remember(key: str, st: BreakerState) -> None:
    breakers.seen[key] = (st, time.monotonic())


def _fresh(keys: Sequence[str]) -> dict[str, BreakerState] | None:
    now = time.monotonic()
    out = {}
    for key in keys:
        item = breakers.seen.get(key)
        if item is None or now - item[1] > SEEN_FRESH_S:
            return None
        out[key] = item[0]
    return out


def _unavailable(exc: SharedStateUnavailable, doing: str) -> None:
    if _outage.failed():
        log.error("shared state unreachable while %s; breakers fail open (every route is tried): %s", doing, exc)


def _skip_store() -> bool:
    return _outage.skip()


def _available() -> None:
    if _outage.recovered():
        log.warning("shared state reachable again; breakers resume")


async def _read(keys: Sequence[str]) -> dict[str, BreakerState]:
    raw = await state().get_many(keys)
    _available()
    out = {}
    for key in keys:
        st = decode(raw.get(key))
        _remember(key, st)
        out[key] = st
    return out


def _ttl(st: BreakerState, now: float) -> float:
    return STATE_TTL_S + max(0.0, (st.open_until or now) - now)


async def _write(key: str, st: BreakerState, now: float) -> None:
    await state().set(key, encode(st), ttl=_ttl(st, now))
    _remember(key, st)


def _keys(route: RouteInfo, token: str | None = None) -> tuple[str, ...]:
    """The breakers an attempt on `route` by key `token` passes: provider, route, and that key's on the route.
    In this order, which is also the order probes are claimed in (a provider probe decides for all its routes)."""
    keys = (provider_key(route.provider.name), route_key(route.id))
    return keys if token is None else (*keys, key_breaker_key(route.id, token))


async def usable_routes(
    routes: Sequence[RouteInfo],
    key: KeyInfo | None = None,
) -> tuple[list[RouteInfo], float | None]:
    """The routes whose provider, route and (for `key`) key breakers let traffic through (closed, or half-open:
    `try_acquire` then picks the one probe), in the given order, and the seconds until the first dropped one
    half-opens (None when nothing was dropped). One shared-state round trip for all of them, and now and then
    (ACTIVE_MARK_S) one more to note that `key` uses these routes."""
    if not routes or _skip_store():
        return list(routes), None
    token = key_token(key)
    keys = list(dict.fromkeys(k for route in routes for k in _keys(route, token)))
    try:
        states = await _read(keys)
        if token is not None:
            await _mark_active(routes, token)
    except SharedStateUnavailable as exc:
        _unavailable(exc, "building a chain")
        return list(routes), None
    now = time.time()
    usable, wait = [], None
    for route in routes:
        blocked_for = max(seconds_until_half_open(states[k], now) for k in _keys(route, token))
        if blocked_for > 0:
            wait = blocked_for if wait is None else min(wait, blocked_for)
        else:
            usable.append(route)
    return usable, wait


_marked: dict[tuple[int, str], float] = {}  # (route id, key) -> time.monotonic() of this process's last mark


async def _mark_active(routes: Sequence[RouteInfo], token: str) -> None:
    """Note in the shared store that `token` uses these routes (at most every ACTIVE_MARK_S per route and key in
    this process). A lost compare-and-set race is retried; a route whose mark still fails is marked next time."""
    mono = time.monotonic()
    due = [r.id for r in routes if mono - _marked.get((r.id, token), -ACTIVE_MARK_S) >= ACTIVE_MARK_S]
    if not due:
        return
    if len(_marked) > 100_000:  # keys come and go; the throttle only needs recent entries
        _marked.clear()
    keys = [activity_key(route_id) for route_id in dict.fromkeys(due)]
    for attempt in range(CAS_TRIES):
        if attempt:
            await asyncio.sleep(random.uniform(0, CAS_PAUSE_S))
        raw = await state().get_many(keys)
        now = time.time()
        values = {
            k: (
                json.dumps(mark_active(decode_activity(raw.get(k)), token, now), separators=(",", ":")),
                ACTIVE_WINDOW_S,
            )
            for k in keys
        }
        if await state().compare_and_set({k: raw.get(k) for k in keys}, values):
            break
    for route_id in due:
        _marked[(route_id, token)] = mono


async def try_acquire(route: RouteInfo, key: KeyInfo | None = None) -> bool:
    """May this attempt go to `route` now? True when its provider, route and (for `key`) key breakers are closed.
    When one is half-open, exactly one caller across all workers wins the claim and becomes the probe; everyone
    else gets False and moves on."""
    if _skip_store():
        return True
    keys = _keys(route, key_token(key))
    try:
        states = _fresh(keys) or await _read(keys)
        now = time.time()
        statuses = {name: status_at(states[name], now) for name in keys}
        if OPEN in statuses.values():
            return False
        claimed: list[str] = []
        # Provider first: a provider probe decides for all its routes, so take it before a route's own slot.
        for name in keys:
            if statuses[name] != HALF_OPEN:
                continue
            st = states[name]
            probe = _probe_key(name, st)
            # The claim lives one cooldown: a probe that never reports back (crashed worker) is retried after it.
            if not await state().add(probe, "1", ttl=st.cooldown_s or 60.0):
                if claimed:
                    await state().delete(*claimed)
                return False
            claimed.append(probe)
        if claimed:
            log.info("breaker half-open: probing %s", route.label)
        return True
    except SharedStateUnavailable as exc:
        _unavailable(exc, "claiming a probe")
        return True


async def record_success(route: RouteInfo, key: KeyInfo | None = None) -> None:
    """Close the route's, its provider's and `key`'s breakers on the route; a success from any key ends the route's
    run of failures. Free when all are already closed and clean."""
    if _skip_store():
        return
    keys = _keys(route, key_token(key))
    try:
        states = _fresh(keys) or await _read(keys)
        now = time.time()
        for name in keys:
            st = states[name]
            if not st.is_clean:
                if st.status == OPEN:
                    log.warning("breaker closed: %s (%s)", name, route.label)
                    if name == keys[0]:  # the provider's breaker
                        alerts.breaker_closed(route.provider.name)
                await _write(name, on_success(st), now)
    except SharedStateUnavailable as exc:
        _unavailable(exc, "recording a success")


async def record_failure(
    route: RouteInfo, reason: str, retry_after: float | None = None, key: KeyInfo | None = None
) -> None:
    """Count one failed attempt on `route` against its route breaker, or against its provider's breaker for
    whole-provider reasons (connect_error, http_401, http_403, credits_exhausted).

    `retry_after` is for an `http_429` whose Retry-After the flow will not wait out: the route is taken out at once
    for that long. A short Retry-After the flow waits and retries on should be recorded without it.

    `key` is the API key whose request failed. A route failure is attributed to it: it counts against that key's
    breaker on the route, and opens the route breaker only on outage evidence (see the module docstring). Without
    a key the failure counts for everyone, as any failure did before keys were told apart."""
    if reason in CLIENT_ERROR_REASONS:
        log.warning("client error %s passed to the breaker for %s; ignored", reason, route.label)
        return
    if _skip_store():
        return
    p: ProviderInfo = route.provider
    plan = plan_failure(
        reason,
        breaker_failures=p.breaker_failures,
        breaker_cooldown_s=p.breaker_cooldown_s,
        credit_cooldown_s=p.credit_cooldown_s,
        retry_after=retry_after,
    )
    target = provider_key(p.name) if plan.scope == "provider" else route_key(route.id)
    token = key_token(key) if plan.attributed else None
    own = key_breaker_key(route.id, token) if token is not None else None
    keys = [target] if own is None else [target, own, activity_key(route.id)]
    try:
        # Read, decide, then write only if nobody wrote in between (compare-and-set, atomic in Redis): two workers
        # failing at the same instant both count, so neither misses the threshold. A lost race reads again.
        for attempt in range(CAS_TRIES):
            if attempt:
                await asyncio.sleep(random.uniform(0, CAS_PAUSE_S))
            raw = await state().get_many(keys)
            _available()
            now = time.time()
            st = decode(raw.get(target))
            others = token is not None and others_active(decode_activity(raw.get(keys[2])), token, now)
            after = {target: on_failure(st, reason=reason, now=now, plan=plan, key=token, others_active=others)}
            before = {target: st}
            if own is not None:
                before[own] = decode(raw.get(own))
                after[own] = on_failure(before[own], reason=reason, now=now, plan=plan)
            written = await state().compare_and_set(
                {k: raw.get(k) for k in after}, {k: (encode(v), _ttl(v, now)) for k, v in after.items()}
            )
            if written:
                break
        else:
            log.warning("breaker failure on %s not counted: %d concurrent updates won the race", route.label, CAS_TRIES)
            return
        for k, st_after in after.items():
            _remember(k, st_after)
            st_before = before[k]
            if st_after.status == OPEN and (st_before.status != OPEN or st_after.open_until != st_before.open_until):
                log.warning(
                    "breaker open: %s (%s) for %.1fs after %s",
                    k,
                    route.label,
                    (st_after.open_until or now) - now,
                    reason,
                )
                if k == target and plan.scope == "provider" and st_before.status != OPEN:  # a new episode
                    alerts.breaker_opened(p.name, reason, (st_after.open_until or now) - now)
            elif k == target and st_after.status == CLOSED and status_at(st_before, now) == HALF_OPEN:
                log.info("breaker closed: %s (%s): the failed probe was key %s's alone", k, route.label, token)
    except SharedStateUnavailable as exc:
        _unavailable(exc, "recording a failure")
