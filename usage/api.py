"""`GET /v1/usage?start=&end=&group_by=`: a key's own usage as JSON (SPEC §8), read from the hourly rollup.

Authenticated with the caller's API key like every /v1 endpoint; a key only ever sees its own rows (the master key
sees the rows logged as `master`). A plain sync view: it reads the database, and Django runs it in a thread
under ASGI, so it never blocks the event loop. Errors are OpenAI-shaped (routing.proxy.errors).
"""

from __future__ import annotations


import orjson
from django.db.models import F, Sum
from django.db.models.functions import TruncDay
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from apikeys.auth import KeyRejected, authenticate
from routing import snapshot
from routing.proxy.errors import error_response
from usage import reports
from usage.filters import MASTER, FilterError, UsageFilter, parse_period
from usage.models import ROLLUP_MEASURES

DEFAULT_PRESET = "30d"
# group_by value -> the rollup expression that names a group.
GROUPS = {
    "none": None,
    "hour": F("hour"),
    "day": TruncDay("hour"),
    "alias": F("alias"),
    "policy": F("policy"),
    "tier": F("tier"),
    "provider": F("provider"),
    "model": F("upstream_model"),
    "status_class": F("status_class"),
}


def _group_label(value) -> str | int | None:
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return value


@csrf_exempt
def usage_view(request):
    if request.method != "GET":
        return error_response(405, "method_not_allowed", f"Method {request.method} is not allowed; use GET.",
                              headers={"Allow": "GET"})
    try:
        key = authenticate(snapshot.current(), request.headers)
    except KeyRejected as exc:
        return error_response(401, exc.code, exc.message)
    group_by = (request.GET.get("group_by") or "none").strip()
    if group_by not in GROUPS:
        return error_response(400, "invalid_group_by",
                              f"'group_by' must be one of {', '.join(GROUPS)}; got {group_by!r}.", param="group_by")
    try:
        period = parse_period(request.GET, default_preset=DEFAULT_PRESET)
    except FilterError as exc:
        return error_response(400, "invalid_period", exc.message, param=exc.param)
    usage_filter = UsageFilter(period=period, visible_key_ids=None, key=MASTER if key.is_master else key.id)
    rollups = reports.rollups(usage_filter)
    totals = reports.Figures.from_sums(rollups.aggregate(**{m: Sum(m) for m in ROLLUP_MEASURES}))
    body = {
        "object": "usage",
        "key": {"name": key.name, "prefix": key.prefix},
        "start": _group_label(period.start),
        "end": _group_label(period.end),
        "group_by": group_by,
        "total": totals.as_json(),
        "data": [],
    }
    expression = GROUPS[group_by]
    if expression is not None:
        rows = (rollups.annotate(group=expression).values("group")
                .annotate(**{m: Sum(m) for m in ROLLUP_MEASURES}).order_by("group"))
        body["data"] = [{"group": _group_label(row["group"]), **reports.Figures.from_sums(row).as_json()}
                        for row in rows]
    return HttpResponse(orjson.dumps(body), content_type="application/json")


