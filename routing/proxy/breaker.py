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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rainymodel_site.shared_state import Outage, SharedStateUnavailable, state

if TYPE_CHECKING:
    from routing.snapshot import KeyInfo, ProviderInfo, RouteInfo, Snapshot

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
RECENT_FAILURES_KEPT = 5
RUN_KEYS_KEPT = 5  # distinct keys remembered per run of failures; two are enough to decide, the rest is for admins
# A key that built a chain with a route in the last minute is "using" it: its absence is what lets one key's
# failures open the route for everyone.
ACTIVE_WINDOW_S = 60.0
ACTIVE_MARK_S = 5.0  # how often one process re-marks a key as active on a route
ACTIVE_KEPT = 8  # newest keys kept per route; deciding needs only "another key than this one"
# A compare-and-set that lost a race reads again after a short random pause; every round has a winner, so this many
# tries outlast that many simultaneous failures on one breaker (far more than an outage produces in a millisecond).
CAS_TRIES = 32
CAS_PAUSE_S = 0.002

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
    keys: tuple[str, ...] = ()  # the distinct keys whose failures make up the current run (route breakers)

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

    @property
    def attributed(self) -> bool:
        """Could the request's own content have caused it? Then it is counted against the key that sent it, and
        opens the route for everyone only on outage evidence. Whole-provider reasons (unreachable host, our
        credentials, our credit) and a 429 the upstream asks us to wait out are never the content's doing."""
        return self.scope == "route" and not self.at_once


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


def is_outage_evidence(keys: tuple[str, ...], *, others_active: bool) -> bool:
    """May a run of failures from `keys` take the route out for everyone? Yes when two keys failed, or when no
    other key has used the route lately (one key that is alone cannot be told apart from a real outage, and then
    nobody else is harmed by believing it)."""
    return len(keys) >= 2 or not others_active


def on_failure(st: BreakerState, *, reason: str, now: float, plan: FailurePlan, key: str | None = None,
               others_active: bool = False) -> BreakerState:
    """The state after one failed attempt.

    `key` is the API key the failure is attributed to (None: not attributed, it always counts); `others_active`
    says whether another key has used the route within ACTIVE_WINDOW_S. An attributed failure opens the breaker,
    and re-opens it after a failed probe, only when the run is outage evidence (`is_outage_evidence`); a failed
    probe that is not closes the breaker instead, leaving that key to its own key breaker."""
    recent = (*st.recent, (round(now, 3), reason))[-RECENT_FAILURES_KEPT:]
    failures = st.failures + 1
    keys = st.keys
    if key is not None and key not in keys:
        keys = (*keys, key)[:RUN_KEYS_KEPT]
    evidence = key is None or not plan.attributed or is_outage_evidence(keys, others_active=others_active)
    base = replace(st, failures=failures, last_reason=reason, recent=recent, keys=keys)
    current = status_at(st, now)
    if current == OPEN:
        # An attempt that began before the breaker opened, finishing late: it does not restart the cooldown, but a
        # failure that opens at once for longer (402 during a run of 503s) does extend it.
        if plan.at_once and now + plan.cooldown_s > st.open_until:
            return replace(base, open_until=now + plan.cooldown_s, cooldown_s=plan.cooldown_s)
        return base
    if current == HALF_OPEN:
        if not evidence:
            # The probe failed on one key's request while others use the route: that key's own problem.
            return replace(base, status=CLOSED, open_until=None, cooldown_s=None)
        # The probe failed: another cooldown of the same length (or the at-once length this failure demands).
        length = plan.cooldown_s if plan.at_once else (st.cooldown_s or plan.cooldown_s)
        return replace(base, status=OPEN, open_until=now + length, cooldown_s=length)
    if plan.at_once or (failures >= plan.threshold and evidence):
        return replace(base, status=OPEN, open_until=now + plan.cooldown_s, cooldown_s=plan.cooldown_s)
    return base


def on_success(st: BreakerState) -> BreakerState:
    """The state after a successful attempt: closed, count cleared; the failure history stays for the admin."""
    if st.is_clean:
        return st
    return replace(st, status=CLOSED, failures=0, open_until=None, cooldown_s=None, keys=())


def others_active(activity: dict[str, float], key: str, now: float) -> bool:
    """Has a key other than `key` used the route within ACTIVE_WINDOW_S? `activity` is {key: epoch seconds}."""
    return any(other != key and seen >= now - ACTIVE_WINDOW_S for other, seen in activity.items())


def mark_active(activity: dict[str, float], key: str, now: float) -> dict[str, float]:
    """`activity` with `key` seen at `now`, entries older than the window dropped, the newest ACTIVE_KEPT kept."""
    fresh = {k: t for k, t in activity.items() if t >= now - ACTIVE_WINDOW_S and k != key}
    fresh[key] = round(now, 3)
    return dict(sorted(fresh.items(), key=lambda item: item[1])[-ACTIVE_KEPT:])


def decode_activity(raw: object) -> dict[str, float]:
    if raw is None:
        return {}
    try:
        return {str(k): float(t) for k, t in json.loads(raw).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("unreadable route activity %r ignored: %s", raw, exc)
        return {}


def encode(st: BreakerState) -> str:
    return json.dumps({
        "s": st.status, "f": st.failures, "u": st.open_until, "c": st.cooldown_s, "r": st.last_reason,
        "h": [list(item) for item in st.recent], **({"k": list(st.keys)} if st.keys else {}),
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
            keys=tuple(str(k) for k in data.get("k") or ()),
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
    if st.keys:
        out["failing_keys"] = len(st.keys)
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
_outage = Outage(STORE_RETRY_S)


def route_key(route_id: int) -> str:
    return f"breaker:route:{route_id}"


def provider_key(name: str) -> str:
    return f"breaker:provider:{name}"


def key_breaker_key(route_id: int, key: str) -> str:
    """The breaker of one API key on one route (`key` as given by `key_token`)."""
    return f"{route_key(route_id)}:key:{key}"


def activity_key(route_id: int) -> str:
    return f"{route_key(route_id)}:active"


def key_token(key: KeyInfo | None) -> str | None:
    """How an API key is named in breaker state: its id, or `master` for the master key (which counts as a key)."""
    if key is None:
        return None
    return "master" if key.is_master else str(key.id)


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


async def usable_routes(routes: Sequence[RouteInfo], key: KeyInfo | None = None,
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
        values = {k: (json.dumps(mark_active(decode_activity(raw.get(k)), token, now), separators=(",", ":")),
                      ACTIVE_WINDOW_S) for k in keys}
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
        statuses = {key: status_at(states[key], now) for key in keys}
        if OPEN in statuses.values():
            return False
        claimed = []
        # Provider first: a provider probe decides for all its routes, so take it before a route's own slot.
        for key in keys:
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


async def record_success(route: RouteInfo, key: KeyInfo | None = None) -> None:
    """Close the route's, its provider's and `key`'s breakers on the route; a success from any key ends the route's
    run of failures. Free when all are already closed and clean."""
    if _skip_store():
        return
    keys = _keys(route, key_token(key))
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


async def record_failure(route: RouteInfo, reason: str, retry_after: float | None = None,
                         key: KeyInfo | None = None) -> None:
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
        reason, breaker_failures=p.breaker_failures, breaker_cooldown_s=p.breaker_cooldown_s,
        credit_cooldown_s=p.credit_cooldown_s, retry_after=retry_after,
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
            others = own is not None and others_active(decode_activity(raw.get(keys[2])), token, now)
            after = {target: on_failure(st, reason=reason, now=now, plan=plan, key=token, others_active=others)}
            before = {target: st}
            if own is not None:
                before[own] = decode(raw.get(own))
                after[own] = on_failure(before[own], reason=reason, now=now, plan=plan)
            written = await state().compare_and_set(
                {k: raw.get(k) for k in after}, {k: (encode(v), _ttl(v, now)) for k, v in after.items()})
            if written:
                break
        else:
            log.warning("breaker failure on %s not counted: %d concurrent updates won the race", route.label,
                        CAS_TRIES)
            return
        for k, st_after in after.items():
            _remember(k, st_after)
            st_before = before[k]
            if st_after.status == OPEN and (st_before.status != OPEN or st_after.open_until != st_before.open_until):
                log.warning("breaker open: %s (%s) for %.1fs after %s", k, route.label,
                            st_after.open_until - now, reason)
            elif k == target and st_after.status == CLOSED and status_at(st_before, now) == HALF_OPEN:
                log.info("breaker closed: %s (%s): the failed probe was key %s's alone", k, route.label, token)
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
_admin_outage = Outage(ADMIN_RETRY_AFTER_FAILURE_S)


def breaker_text_sync(*, provider: str | None = None, route_id: int | None = None) -> str:
    """One line for an admin column or field (`closed`, `open until 12:00:05 UTC (http_503)`, `half-open (...)`).
    Never raises: an unreachable store reads as `unknown (shared state unreachable)`."""
    key = provider_key(provider) if provider is not None else route_key(route_id)
    if _admin_outage.skip():
        return "unknown (shared state unreachable)"
    try:
        st = states_sync([key])[key]
    except SharedStateUnavailable:
        _admin_outage.failed()
        return "unknown (shared state unreachable)"
    _admin_outage.recovered()
    return describe_text(st, time.time())


def reset_sync(*, provider: str | None = None, route_id: int | None = None) -> None:
    """Close a provider's and/or a route's breaker now and forget its failures (admin action). Resetting a route
    also closes every key's breaker on it."""
    keys = []
    if provider is not None:
        keys.append(provider_key(provider))
    if route_id is not None:
        keys.append(route_key(route_id))
    if not keys:
        raise ValueError("reset_sync needs provider= or route_id=")
    state().delete_sync(*keys)
    if route_id is not None:
        state().delete_prefix_sync(key_breaker_key(route_id, ""))
    for key in list(_seen):
        if key in keys or (route_id is not None and key.startswith(key_breaker_key(route_id, ""))):
            _seen.pop(key, None)
    log.warning("breaker reset: %s", ", ".join(keys))
