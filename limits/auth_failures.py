"""The per-IP limit on failed authentication (SPEC §7): `lim:authfail:<ip>` counts failures in a 60 s window that
starts at the first one. Fails open when the store is unreachable (authentication itself still holds)."""

from __future__ import annotations

from django.conf import settings

from limits import base
from limits.base import WINDOW_S, LimitExceeded, refusal_headers, store_failed, wait_words
from rainymodel_site.shared_state import SharedStateUnavailable


def auth_failure_counter(client_ip: str | None) -> str:
    return "lim:authfail:" + (client_ip or "unknown")[:64]


async def check_auth_failures(client_ip: str) -> None:
    """Raise LimitExceeded when this IP already had RAINYMODEL_AUTH_FAILURES_PER_MIN failed authentications in the
    current 60 s window (which starts at its first failure). With the flow's order (on a failed authentication:
    check, then record) an IP gets that many 401s per window, then 429s until the window ends."""
    limit = settings.RAINYMODEL_AUTH_FAILURES_PER_MIN
    if not limit or base.outage.skip():
        return
    store = base.store()
    counter = auth_failure_counter(client_ip)
    try:
        failures = int(await store.get(counter) or 0)
        if failures < limit:
            return
        reset = await store.ttl(counter) or WINDOW_S
    except SharedStateUnavailable as exc:
        store_failed("failed-authentication limit", exc)
        return
    raise LimitExceeded(
        "rate_limit_exceeded",
        "requests",
        f"Too many failed authentication attempts from your address. Try again in {wait_words(reset)}.",
        reset,
        refusal_headers({}, "requests", limit, reset),
    )


async def record_auth_failure(client_ip: str) -> None:
    """Count one failed authentication for this IP (never raises)."""
    if base.outage.skip():
        return
    try:
        await base.store().incr(auth_failure_counter(client_ip), 1, WINDOW_S)
    except SharedStateUnavailable as exc:
        store_failed("failed-authentication limit", exc)
