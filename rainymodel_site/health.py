"""Liveness and readiness. `/health` touches neither database nor cache (a load balancer may call it often);
`/health/ready` checks both, the config snapshot, and reports breaker state per provider."""

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from rainymodel_site.threads import run_blocking


async def health(request):
    return JsonResponse({"status": "ok", "version": settings.VERSION})


def _readiness() -> tuple[dict, bool]:
    from rainymodel_site.shared_state import SharedStateUnavailable, state
    from routing import snapshot
    from routing.proxy import breaker

    checks, ready = {}, True
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
            checks["breakers"] = breaker.describe_all_sync(snapshot.current())
        except SharedStateUnavailable:
            checks["breakers"] = {"error": "shared state unreachable"}
    checks["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return checks, ready


async def ready(request):
    checks, ok = await run_blocking(_readiness)
    return JsonResponse({"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503)
