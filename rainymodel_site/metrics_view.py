"""`GET /metrics`: the Prometheus text format of rainymodel_site/metrics.py (summed over gunicorn's workers) plus the
breakers' state, read from the shared store at scrape time (docs/observability.md).

Who may read it: a scraper sending `Authorization: Bearer $RAINYMODEL_METRICS_TOKEN` (compared in constant time,
no database query), or staff signed in to the admin (one session and user lookup, in a thread of its own). Anyone
else gets 401, which says nothing about what would have been accepted.

Breaker state is read at scrape time rather than kept in gauges: it lives in the shared store, which every worker
sees alike, so any worker answers the scrape for all of them; a half-open breaker is an open one whose time has
passed, a change no code path observes; and gauges set by the worker that saw a transition would go stale in the
others. The routes come from the in-process snapshot (no database query); the read is one round trip to the store.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from rainymodel_site import metrics, operator_access
from rainymodel_site.shared_state import SharedStateUnavailable
from rainymodel_site.threads import run_blocking
from routing import breakers, snapshot

log = logging.getLogger(__name__)

STAFF_CHECK_BUDGET_S = 2.0
BREAKER_STATES = (breakers.CLOSED, breakers.OPEN, breakers.HALF_OPEN)


class BreakerCollector:
    """`rainymodel_breaker_state{scope, provider, alias, route, route_id, state}`: 1 for each breaker's current state,
    0 for the other two (a state set: `== 1` selects, `sum by (state)` counts)."""

    def collect(self):
        family = GaugeMetricFamily(
            "rainymodel_breaker_state",
            "Circuit breaker state per provider and per route (1 = the breaker is in this state), from the shared "
            "store at scrape time.",
            labels=("scope", "provider", "alias", "route", "route_id", "state"),
        )
        if not snapshot.status()["loaded"]:
            return  # building it would query the database; the server loads it at startup
        snap = snapshot.current()
        routes = {route.id: route for alias in snap.aliases.values() for route in alias.routes}
        keys = [breakers.provider_key(name) for name in snap.providers]
        keys += [breakers.route_key(route_id) for route_id in routes]
        try:
            states = breakers.states_sync(keys)
        except SharedStateUnavailable as exc:
            log.warning("metrics: breaker state unreadable: %s", exc)
            return
        now = time.time()
        for name in snap.providers:
            current = breakers.status_at(states[breakers.provider_key(name)], now)
            for state in BREAKER_STATES:
                family.add_metric(["provider", name, "", "", "", state], 1.0 if state == current else 0.0)
        for route_id, route in routes.items():
            current = breakers.status_at(states[breakers.route_key(route_id)], now)
            labels = ["route", route.provider.name, route.alias, route.label, str(route_id)]
            for state in BREAKER_STATES:
                family.add_metric([*labels, state], 1.0 if state == current else 0.0)
        yield family


_scrape_time = CollectorRegistry(auto_describe=False)
_scrape_time.register(BreakerCollector())


async def may_read(request) -> bool:
    return await operator_access.bearer_or_staff(request, settings.RAINYMODEL_METRICS_TOKEN, STAFF_CHECK_BUDGET_S)


async def metrics_view(request):
    if request.method != "GET":
        return JsonResponse({"error": {"message": "Use GET.", "code": "method_not_allowed"}}, status=405)
    if not await may_read(request):
        return JsonResponse(
            {"error": {"message": "Authentication required.", "code": "unauthorized"}},
            status=401,
        )
    metrics.fold()  # this worker's latest calls; the other workers' are at most one fold interval old
    body = await run_blocking(metrics.exposition, _scrape_time)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
