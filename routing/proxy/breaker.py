"""Circuit breaker per route, and per provider for failures that concern the whole provider (SPEC §6).

closed → open after `breaker_failures` consecutive failed attempts → skipped for the cooldown
(`breaker_cooldown_s`; credits exhausted: `credit_cooldown_s`; a long 429: its `Retry-After`) → half-open, where
exactly one request across all workers and machines probes (an atomic claim in the shared store) → a successful
probe closes the breaker, a failed one opens it for another cooldown of the same length.

Two halves:
- Pure transitions over the frozen `BreakerState` (no I/O, no clock: `now` is an argument). They decide.
- The store: the state of every breaker lives in the shared store (`rainymodel_site.shared_state`), so every worker
  agrees. These are the functions the request path calls: `usable_routes`, `try_acquire`, `record_success`,
  `record_failure`; admin, health and commands use `describe_all_sync` and `reset_sync`.

This module must never touch the database or httpx, and on the request path it must stay cheap: building a chain
costs one shared-state round trip for all its breakers, and a request on a healthy route costs nothing more
(the states read for the chain are remembered for a moment, so `try_acquire` and `record_success` need no
round trip while the breaker is closed and clean). When the shared store is unreachable the breaker fails open:
every route is tried, as if there were no breaker, and that is logged once.

Times are epoch seconds (`time.time()`) because they are compared across machines; keep clocks in sync (NTP).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rainymodel_site.shared_state import SharedStateUnavailable, state

if TYPE_CHECKING:
    from routing.snapshot import ProviderInfo, RouteInfo, Snapshot

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
RECENT_FAILURES_KEPT = 5

# Failures that say something about the whole provider (unreachable host, our credentials, our credit), not about
# one model on it: they open the provider's breaker, which takes every route on that provider out of the chain.
PROVIDER_REASONS = frozenset({"connect_error", "http_401", "http_403", "credits_exhausted"})
# Never passed by the flow (the request itself was wrong), refused here too so a slip cannot open a breaker.
CLIENT_ERROR_REASONS = frozenset({"http_400", "http_413", "http_422", "context_length_exceeded"})


# --- pure part ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BreakerState:
    """One breaker as stored. `status` is CLOSED or OPEN when stored; HALF_OPEN is what an OPEN breaker is once
    `open_until` has passed (see `status_at`). `cooldown_s` is the length of the current opening, so a failed probe
    re-opens for the same length (a 402 for `credit_cooldown_s`, a 429 for its `Retry-After`)."""

    status: str = CLOSED
    failures: int = 0  # consecutive failed attempts
    open_until: float | None = None
    cooldown_s: float | None = None
    last_reason: str | None = None
    recent: tuple[tuple[float, str], ...] = ()  # (epoch seconds, reason), newest last

    @property
    def is_clean(self) -> bool:
        """Closed with no failure counted: a success changes nothing, so it need not be written."""
        return self.status == CLOSED and self.failures == 0


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """What one failure means: which breaker it counts against, and how that breaker opens."""

    scope: str  # "provider" | "route"
    threshold: int  # consecutive failures that open it
    cooldown_s: float
    at_once: bool  # opens on this failure regardless of the count


def status_at(st: BreakerState, now: float) -> str:
    if st.status == OPEN:
        return OPEN if st.open_until is not None and now < st.open_until else HALF_OPEN
    return st.status


def seconds_until_half_open(st: BreakerState, now: float) -> float:
    """0 when the breaker does not keep traffic out (closed or half-open)."""
    if status_at(st, now) != OPEN:
        return 0.0
    return max(0.0, st.open_until - now)


def plan_failure(
    reason: str, *, breaker_failures: int, breaker_cooldown_s: float, credit_cooldown_s: float,
    retry_after: float | None = None,
) -> FailurePlan:
    """Map a flow reason code to the breaker it counts against. Provider settings come in as plain numbers so this
    stays free of the snapshot's types."""
    if reason in CLIENT_ERROR_REASONS:
        raise ValueError(f"client errors never count against a breaker (got {reason!r})")
    threshold = max(1, int(breaker_failures))
    if reason == "credits_exhausted":
        return FailurePlan("provider", threshold, float(credit_cooldown_s), at_once=True)
    if reason == "http_429" and retry_after is not None and retry_after > 0:
        return FailurePlan("route", threshold, float(retry_after), at_once=True)
    scope = "provider" if reason in PROVIDER_REASONS else "route"
    return FailurePlan(scope, threshold, float(breaker_cooldown_s), at_once=False)


def on_failure(st: BreakerState, *, reason: str, now: float, plan: FailurePlan) -> BreakerState:
    """The state after one failed attempt."""
    recent = (*st.recent, (round(now, 3), reason))[-RECENT_FAILURES_KEPT:]
    failures = st.failures + 1
    base = replace(st, failures=failures, last_reason=reason, recent=recent)
    current = status_at(st, now)
    if current == OPEN:
        # An attempt that began before the breaker opened, finishing late: it does not restart the cooldown, but a
        # failure that opens at once for longer (402 during a run of 503s) does extend it.
        if plan.at_once and now + plan.cooldown_s > st.open_until:
            return replace(base, open_until=now + plan.cooldown_s, cooldown_s=plan.cooldown_s)
        return base
    if current == HALF_OPEN:
        # The probe failed: another cooldown of the same length (or the at-once length this failure demands).
        length = plan.cooldown_s if plan.at_once else (st.cooldown_s or plan.cooldown_s)
        return replace(base, status=OPEN, open_until=now + length, cooldown_s=length)
    if plan.at_once or failures >= plan.threshold:
        return replace(base, status=OPEN, open_until=now + plan.cooldown_s, cooldown_s=plan.cooldown_s)
    return base


def on_success(st: BreakerState) -> BreakerState:
    """The state after a successful attempt: closed, count cleared; the failure history stays for the admin."""
    if st.is_clean:
        return st
    return replace(st, status=CLOSED, failures=0, open_until=None, cooldown_s=None)


def encode(st: BreakerState) -> str:
    return json.dumps({
        "s": st.status, "f": st.failures, "u": st.open_until, "c": st.cooldown_s, "r": st.last_reason,
        "h": [list(item) for item in st.recent],
    }, separators=(",", ":"))


def decode(raw: object) -> BreakerState:
    """A stored value back into a state; anything unreadable counts as closed (and is logged), so a corrupt key can
    never take a route out of service."""
    if raw is None:
        return BreakerState()
    try:
        data = json.loads(raw)
        status = data["s"] if data["s"] in (CLOSED, OPEN) else CLOSED
        return BreakerState(
            status=status, failures=int(data.get("f") or 0),
            open_until=None if data.get("u") is None else float(data["u"]),
            cooldown_s=None if data.get("c") is None else float(data["c"]),
            last_reason=data.get("r"),
            recent=tuple((float(ts), str(reason)) for ts, reason in data.get("h") or ()),
        )
    except (TypeError, ValueError, KeyError) as exc:
        log.warning("unreadable breaker state %r treated as closed: %s", raw, exc)
        return BreakerState()


def describe(st: BreakerState, now: float) -> dict:
    """A plain, JSON-ready description for `/health/ready` and the admin."""
    current = status_at(st, now)
    out = {"state": current, "failures": st.failures}
    if current == OPEN:
        out["open_until"] = _iso(st.open_until)
        out["retry_in_s"] = round(st.open_until - now, 1)
    if st.last_reason:
        out["last_reason"] = st.last_reason
    if st.recent:
        out["recent_failures"] = [{"at": _iso(ts), "reason": reason} for ts, reason in st.recent]
    return out


def describe_text(st: BreakerState, now: float) -> str:
    """One line for an admin column: `closed`, `open until 12:00:05 UTC (http_503)`, `half-open`."""
    current = status_at(st, now)
    if current == OPEN:
        until = datetime.fromtimestamp(st.open_until, UTC).strftime("%H:%M:%S UTC")
        return f"open until {until} ({st.last_reason})"
    if current == HALF_OPEN:
        return f"half-open ({st.last_reason})"
    if st.failures:
        return f"closed, {st.failures} recent failure{'s' if st.failures > 1 else ''} ({st.last_reason})"
    return "closed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


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

_seen: dict[str, tuple[BreakerState, float]] = {}  # key -> (state, time.monotonic() when read); this process only
_store_down = False
_store_retry_at = 0.0


def route_key(route_id: int) -> str:
    return f"breaker:route:{route_id}"


def provider_key(name: str) -> str:
    return f"breaker:provider:{name}"


def _probe_key(key: str, st: BreakerState) -> str:
    # One claim slot per opening: a claim can never be confused with the next cooldown's probe.
    return f"{key}:probe:{st.open_until!r}"


def _remember(key: str, st: BreakerState) -> None:
    _seen[key] = (st, time.monotonic())


def _fresh(keys: Sequence[str]) -> dict[str, BreakerState] | None:
    now = time.monotonic()
    out = {}
    for key in keys:
        item = _seen.get(key)
        if item is None or now - item[1] > SEEN_FRESH_S:
            return None
        out[key] = item[0]
    return out


def _unavailable(exc: SharedStateUnavailable, doing: str) -> None:
    global _store_down, _store_retry_at
    if not _store_down:
        log.error("shared state unreachable while %s; breakers fail open (every route is tried): %s", doing, exc)
    _store_down = True
    _store_retry_at = time.monotonic() + STORE_RETRY_S


def _skip_store() -> bool:
    return _store_down and time.monotonic() < _store_retry_at


def _available() -> None:
    global _store_down
    if _store_down:
        log.warning("shared state reachable again; breakers resume")
    _store_down = False


async def _read(keys: Sequence[str]) -> dict[str, BreakerState]:
    raw = await state().get_many(keys)
    _available()
    out = {}
    for key in keys:
        st = decode(raw.get(key))
        _remember(key, st)
        out[key] = st
    return out


async def _write(key: str, st: BreakerState, now: float) -> None:
    remaining = max(0.0, (st.open_until or now) - now)
    await state().set(key, encode(st), ttl=STATE_TTL_S + remaining)
    _remember(key, st)


def _keys(route: RouteInfo) -> tuple[str, str]:
    return route_key(route.id), provider_key(route.provider.name)


async def usable_routes(routes: Sequence[RouteInfo]) -> tuple[list[RouteInfo], float | None]:
    """The routes whose route and provider breakers let traffic through (closed, or half-open: `try_acquire` then
    picks the one probe), in the given order, and the seconds until the first dropped one half-opens (None when
    nothing was dropped). One shared-state round trip for all of them."""
    if not routes or _skip_store():
        return list(routes), None
    keys = list(dict.fromkeys(k for route in routes for k in _keys(route)))
    try:
        states = await _read(keys)
    except SharedStateUnavailable as exc:
        _unavailable(exc, "building a chain")
        return list(routes), None
    now = time.time()
    usable, wait = [], None
    for route in routes:
        rk, pk = _keys(route)
        blocked_for = max(seconds_until_half_open(states[rk], now), seconds_until_half_open(states[pk], now))
        if blocked_for > 0:
            wait = blocked_for if wait is None else min(wait, blocked_for)
        else:
            usable.append(route)
    return usable, wait


async def try_acquire(route: RouteInfo) -> bool:
    """May this attempt go to `route` now? True when both its breakers are closed. When one is half-open, exactly
    one caller across all workers wins the claim and becomes the probe; everyone else gets False and moves on."""
    if _skip_store():
        return True
    keys = _keys(route)
    try:
        states = _fresh(keys) or await _read(keys)
        now = time.time()
        statuses = {key: status_at(states[key], now) for key in keys}
        if OPEN in statuses.values():
            return False
        claimed = []
        # Provider first: a provider probe decides for all its routes, so take it before a route's own slot.
        for key in reversed(keys):
            if statuses[key] != HALF_OPEN:
                continue
            st = states[key]
            probe = _probe_key(key, st)
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


async def record_success(route: RouteInfo) -> None:
    """Close the route's and its provider's breakers. Free when both are already closed and clean."""
    if _skip_store():
        return
    keys = _keys(route)
    try:
        states = _fresh(keys) or await _read(keys)
        now = time.time()
        for key in keys:
            st = states[key]
            if not st.is_clean:
                if st.status == OPEN:
                    log.warning("breaker closed: %s (%s)", key, route.label)
                await _write(key, on_success(st), now)
    except SharedStateUnavailable as exc:
        _unavailable(exc, "recording a success")


async def record_failure(route: RouteInfo, reason: str, retry_after: float | None = None) -> None:
    """Count one failed attempt on `route` against its route breaker, or against its provider's breaker for
    whole-provider reasons (connect_error, http_401, http_403, credits_exhausted).

    `retry_after` is for an `http_429` whose Retry-After the flow will not wait out: the route is taken out at once
    for that long. A short Retry-After the flow waits and retries on should be recorded without it."""
    if reason in CLIENT_ERROR_REASONS:
        log.warning("client error %s passed to the breaker for %s; ignored", reason, route.label)
        return
    if _skip_store():
        return
    p: ProviderInfo = route.provider
    plan = plan_failure(
        reason, breaker_failures=p.breaker_failures, breaker_cooldown_s=p.breaker_cooldown_s,
        credit_cooldown_s=p.credit_cooldown_s, retry_after=retry_after,
    )
    key = provider_key(p.name) if plan.scope == "provider" else route_key(route.id)
    try:
        # Read-modify-write, not atomic: two workers failing at the same instant may count one failure once. The
        # breaker then opens one failure later; never wrongly.
        st = (await _read([key]))[key]
        now = time.time()
        after = on_failure(st, reason=reason, now=now, plan=plan)
        await _write(key, after, now)
        if after.status == OPEN and (st.status != OPEN or after.open_until != st.open_until):
            log.warning(
                "breaker open: %s (%s) for %.1fs after %s", key, route.label, after.open_until - now, reason,
            )
    except SharedStateUnavailable as exc:
        _unavailable(exc, "recording a failure")


# --- admin, health, commands (sync; never on the event loop) ----------------------------------------------------

def states_sync(keys: Sequence[str]) -> dict[str, BreakerState]:
    """Read breaker states by key in one round trip. Raises SharedStateUnavailable."""
    raw = state().get_many_sync(list(keys))
    return {key: decode(raw.get(key)) for key in keys}


def describe_all_sync(snap: Snapshot) -> dict:
    """Every provider's and route's breaker: `{"providers": {name: {...}}, "routes": {id: {...}}}` where each entry
    has `state` (closed / open / half_open), `failures`, and when known `open_until`, `retry_in_s`, `last_reason`,
    `recent_failures`. Raises SharedStateUnavailable."""
    routes = {}
    for alias in snap.aliases.values():
        for route in alias.routes:
            routes[route.id] = route
    keys = [provider_key(name) for name in snap.providers] + [route_key(rid) for rid in routes]
    states = states_sync(keys)
    now = time.time()
    return {
        "providers": {name: describe(states[provider_key(name)], now) for name in snap.providers},
        "routes": {
            str(rid): {"route": route.label, "alias": route.alias, **describe(states[route_key(rid)], now)}
            for rid, route in routes.items()
        },
    }


# After a failed admin read, admin pages stop asking for a moment, so a list of many rows costs one timeout, not one
# per row, while Redis is away.
ADMIN_RETRY_AFTER_FAILURE_S = 5.0
_admin_down_until = 0.0


def breaker_text_sync(*, provider: str | None = None, route_id: int | None = None) -> str:
    """One line for an admin column or field (`closed`, `open until 12:00:05 UTC (http_503)`, `half-open (...)`).
    Never raises: an unreachable store reads as `unknown (shared state unreachable)`."""
    global _admin_down_until
    key = provider_key(provider) if provider is not None else route_key(route_id)
    if time.monotonic() < _admin_down_until:
        return "unknown (shared state unreachable)"
    try:
        st = states_sync([key])[key]
    except SharedStateUnavailable:
        _admin_down_until = time.monotonic() + ADMIN_RETRY_AFTER_FAILURE_S
        return "unknown (shared state unreachable)"
    return describe_text(st, time.time())


def reset_sync(*, provider: str | None = None, route_id: int | None = None) -> None:
    """Close a provider's and/or a route's breaker now and forget its failures (admin action)."""
    keys = []
    if provider is not None:
        keys.append(provider_key(provider))
    if route_id is not None:
        keys.append(route_key(route_id))
    if not keys:
        raise ValueError("reset_sync needs provider= or route_id=")
    state().delete_sync(*keys)
    for key in keys:
        _seen.pop(key, None)
    log.warning("breaker reset: %s", ", ".join(keys))
