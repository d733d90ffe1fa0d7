"""Liveness and readiness. `/health` touches neither database nor cache (a load balancer may call it often);
`/health/ready` checks both, the config snapshot, and reports breaker state per provider.

`/health/ready` answers within READY_BUDGET_S whatever the database or Redis do: the checks run in a worker thread,
and a check still running at the deadline is reported as timed out (the thread finishes on its own; at most one
check runs at a time per process, so a hung database cannot pile up threads). Anonymous callers learn only
`status`; the checks (which name backends, errors and providers) go to staff signed in to the admin and to
callers presenting the master key (`Authorization: Bearer $RAINYMODEL_MASTER_KEY`).
"""

import asyncio
import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from rainymodel_site import operator_access
from rainymodel_site.shared_state import SharedStateUnavailable, state
from rainymodel_site.threads import run_blocking
from routing import breakers, snapshot

# The whole answer, checks and authorization, stays under a second.
READY_BUDGET_S = 0.8
STAFF_CHECK_BUDGET_S = 0.15

# The readiness check under way in this process, and the event loop it belongs to.
_in_flight: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None


async def health(request):
    return JsonResponse({"status": "ok", "version": settings.VERSION})


def _readiness() -> tuple[dict[str, Any], bool]:
    checks: dict[str, Any] = {}
    ready = True
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        ready = False
    try:
        state().ping_sync()
        checks["shared_state"] = {"ok": True, "backend": "redis" if state().shared else "memory"}
    except SharedStateUnavailable as exc:
        checks["shared_state"] = {"ok": False, "error": str(exc)[:200]}
        ready = False
    if checks["shared_state"]["ok"] and snapshot.status()["shared_state_error"]:
        try:
            snapshot.poll_once()  # the store is back: check the config version now, not at the next poll
        except Exception:  # the readiness answer below says what is wrong
            pass
    snap_status = snapshot.status()
    checks["config"] = {"ok": snap_status["loaded"], **snap_status}
    if snap_status["shared_state_error"]:
        checks["config"]["serving_last_snapshot"] = True
    if not snap_status["loaded"]:
        ready = False
    else:
        try:
            checks["breakers"] = breakers.describe_all_sync(snapshot.current())
        except SharedStateUnavailable:
            checks["breakers"] = {"error": "shared state unreachable"}
    checks["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return checks, ready


async def _bounded_readiness(budget: float) -> tuple[dict, bool]:
    """`_readiness()` in a thread, or a timeout report when it takes longer than `budget` seconds. A check that
    outlives its caller's budget is joined by the next caller instead of starting another thread."""
    global _in_flight
    loop = asyncio.get_running_loop()
    if _in_flight is None or _in_flight[0] is not loop or _in_flight[1].done():
        _in_flight = (loop, asyncio.ensure_future(run_blocking(_readiness)))
    try:
        return await asyncio.wait_for(asyncio.shield(_in_flight[1]), budget)
    except TimeoutError:
        # Most often a database (or Redis) that accepts connections but does not answer.
        return {"timeout": True, "error": f"the readiness checks took longer than {budget} s"}, False


async def _may_see_details(request) -> bool:
    return await operator_access.bearer_or_staff(request, settings.RAINYMODEL_MASTER_KEY, STAFF_CHECK_BUDGET_S)


async def ready(request):
    started = time.monotonic()
    details = await _may_see_details(request)
    remaining = READY_BUDGET_S - (time.monotonic() - started)
    checks, ok = await _bounded_readiness(max(remaining, 0.1))
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready"}
    if details:
        body["checks"] = checks
    return JsonResponse(body, status=200 if ok else 503)
