"""The circuit breakers' state (SPEC §6): what a breaker is, how it changes, where it lives in the shared store,
and how admin, health and commands read and reset it.

- Pure transitions over the frozen `BreakerState` (no I/O, no clock: `now` is an argument). They decide.
- The names of breaker keys in the shared store (`rainymodel_site.shared_state`), shared by every worker.
- The sync readers and the reset for admin, health and commands (never on the event loop): `states_sync`,
  `describe_all_sync`, `breaker_text_sync`, `reset_sync`.

The request path's side (which routes are usable, the one probe, recording successes and failures, failing open
when the store is unreachable) is routing/proxy/breaker.py, above this floor; the whole design is in its docstring.
This module must never touch the database or httpx, and never imports routing/proxy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rainymodel_site.shared_state import Outage, SharedStateUnavailable, state
from routing import reasons

if TYPE_CHECKING:
    from routing.snapshot import KeyInfo, Snapshot

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
RECENT_FAILURES_KEPT = 5
RUN_KEYS_KEPT = 5  # distinct keys remembered per run of failures; two are enough to decide, the rest is for admins
# A key that built a chain with a route in the last minute is "using" it: its absence is what lets one key's
# failures open the route for everyone.
ACTIVE_WINDOW_S = 60.0
ACTIVE_MARK_S = 5.0  # how often one process re-marks a key as active on a route
ACTIVE_KEPT = 8  # newest keys kept per route; deciding needs only "another key than this one"

# Failures that say something about the whole provider (unreachable host, our credentials, our credit), not about
# one model on it: they open the provider's breaker, which takes every route on that provider out of the chain.
PROVIDER_REASONS = frozenset({reasons.CONNECT_ERROR, reasons.http(401), reasons.http(403), reasons.CREDITS_EXHAUSTED})
# Never passed by the flow (the request itself was wrong), refused here too so a slip cannot open a breaker.
CLIENT_ERROR_REASONS = frozenset(
    {reasons.http(400), reasons.http(413), reasons.http(422), reasons.CONTEXT_LENGTH_EXCEEDED}
)


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
    if status_at(st, now) != OPEN or st.open_until is None:  # OPEN always has open_until
        return 0.0
    return max(0.0, st.open_until - now)


def plan_failure(
    reason: str,
    *,
    breaker_failures: int,
    breaker_cooldown_s: float,
    credit_cooldown_s: float,
    retry_after: float | None = None,
) -> FailurePlan:
    """Map a flow reason code to the breaker it counts against. Provider settings come in as plain numbers so this
    stays free of the snapshot's types."""
    if reason in CLIENT_ERROR_REASONS:
        raise ValueError(f"client errors never count against a breaker (got {reason!r})")
    threshold = max(1, int(breaker_failures))
    if reason == "credits_exhausted":
        return FailurePlan("provider", threshold, float(credit_cooldown_s), at_once=True)
    if reason == reasons.HTTP_429 and retry_after is not None and retry_after > 0:
        return FailurePlan("route", threshold, float(retry_after), at_once=True)
    scope = "provider" if reason in PROVIDER_REASONS else "route"
    return FailurePlan(scope, threshold, float(breaker_cooldown_s), at_once=False)


def is_outage_evidence(keys: tuple[str, ...], *, others_active: bool) -> bool:
    """May a run of failures from `keys` take the route out for everyone? Yes when two keys failed, or when no
    other key has used the route lately (one key that is alone cannot be told apart from a real outage, and then
    nobody else is harmed by believing it)."""
    return len(keys) >= 2 or not others_active


def on_failure(
    st: BreakerState, *, reason: str, now: float, plan: FailurePlan, key: str | None = None, others_active: bool = False
) -> BreakerState:
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
        assert st.open_until is not None  # status_at says OPEN only with open_until
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


def decode_activity(raw: str | bytes | None) -> dict[str, float]:
    if raw is None:
        return {}
    try:
        return {str(k): float(t) for k, t in json.loads(raw).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("unreadable route activity %r ignored: %s", raw, exc)
        return {}


def encode(st: BreakerState) -> str:
    return json.dumps(
        {
            "s": st.status,
            "f": st.failures,
            "u": st.open_until,
            "c": st.cooldown_s,
            "r": st.last_reason,
            "h": [list(item) for item in st.recent],
            **({"k": list(st.keys)} if st.keys else {}),
        },
        separators=(",", ":"),
    )


def decode(raw: str | bytes | None) -> BreakerState:
    """A stored value back into a state; anything unreadable counts as closed (and is logged), so a corrupt key can
    never take a route out of service."""
    if raw is None:
        return BreakerState()
    try:
        data = json.loads(raw)
        status = data["s"] if data["s"] in (CLOSED, OPEN) else CLOSED
        return BreakerState(
            status=status,
            failures=int(data.get("f") or 0),
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
    out: dict[str, Any] = {"state": current, "failures": st.failures}
    if current == OPEN and st.open_until is not None:  # OPEN always has open_until
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
    if current == OPEN and st.open_until is not None:  # OPEN always has open_until
        until = datetime.fromtimestamp(st.open_until, UTC).strftime("%H:%M:%S UTC")
        return f"open until {until} ({st.last_reason})"
    if current == HALF_OPEN:
        return f"half-open ({st.last_reason})"
    if st.failures:
        return f"closed, {st.failures} recent failure{'s' if st.failures > 1 else ''} ({st.last_reason})"
    return "closed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# --- breaker keys in the shared store ------------------------------------------------------------------------------

# States this process read or wrote lately: key -> (state, time.monotonic() when read). The request path
# (routing/proxy/breaker.py) lets them stand in for the store for a moment; a reset here forgets them.
seen: dict[str, tuple[BreakerState, float]] = {}


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
    if provider is not None:
        key = provider_key(provider)
    elif route_id is not None:
        key = route_key(route_id)
    else:
        raise TypeError("breaker_text_sync needs a provider or a route_id")
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
    for key in list(seen):
        if key in keys or (route_id is not None and key.startswith(key_breaker_key(route_id, ""))):
            seen.pop(key, None)
    log.warning("breaker reset: %s", ", ".join(keys))
