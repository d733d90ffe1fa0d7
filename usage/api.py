"""`GET /v1/usage?start=&end=&group_by=`: a key's own usage as JSON (SPEC §8), read from the hourly rollup.

Authenticated with the caller's API key like every /v1 endpoint; a key only ever sees its own rows (the master key
sees the rows logged as `master`). A plain sync view: it reads the database, and Django runs it in a thread
under ASGI, so it never blocks the event loop. /v1/ is served without Django's request_started/finished signals
(rainymodel_site/asgi.py), so this view does their database-connection bookkeeping itself. Errors are
OpenAI-shaped (rainymodel_site.api_errors).
"""

from __future__ import annotations

from typing import Any

import orjson
from django.db import connections
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from apikeys.auth import api_key_required
from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import error_response
from usage import reports
from usage.filters import MASTER, FilterError, UsageFilter, parse_period

DEFAULT_PRESET = "30d"
# group_by value -> (time bucket, rollup columns) that name a group.
GROUPS = {
    "none": (None, ()),
    "hour": ("hour", ()),
    "day": ("day", ()),
    "alias": (None, ("alias",)),
    "policy": (None, ("policy",)),
    "tier": (None, ("tier",)),
    "provider": (None, ("provider",)),
    "model": (None, ("upstream_model",)),
    "status_class": (None, ("status_class",)),
    "endpoint": (None, ("endpoint",)),
}


def _group_label(value) -> str | int | None:
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return value


@csrf_exempt
def usage_view(request):
    _close_old_connections()
    try:
        return _usage(request)
    finally:
        _close_old_connections()


def _close_old_connections() -> None:
    """What request_started/request_finished do for Django's other views: never reuse a broken or expired
    connection, and give it back (to the pool, on PostgreSQL) when done. Skipped inside a transaction, which
    only a test wrapping the request can have open."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


@api_key_required
def _usage(request):
    if request.method != "GET":
        return error_response(
            405, codes.METHOD_NOT_ALLOWED, f"Method {request.method} is not allowed; use GET.", headers={"Allow": "GET"}
        )
    key = request.api_key
    group_by = (request.GET.get("group_by") or "none").strip()
    if group_by not in GROUPS:
        return error_response(
            400,
            codes.INVALID_GROUP_BY,
            f"'group_by' must be one of {', '.join(GROUPS)}; got {group_by!r}.",
            param="group_by",
        )
    try:
        period = parse_period(request.GET, default_preset=DEFAULT_PRESET)
    except FilterError as exc:
        return error_response(400, codes.INVALID_PERIOD, exc.message, param=exc.param)
    usage_filter = UsageFilter(period=period, visible_key_ids=None, key=MASTER if key.is_master else key.id)
    body: dict[str, Any] = {
        "object": "usage",
        "key": {"name": key.name, "prefix": key.prefix},
        "start": _group_label(period.start),
        "end": _group_label(period.end),
        "group_by": group_by,
        "total": reports.totals(usage_filter).as_json(),
        "data": [],
    }
    bucket, columns = GROUPS[group_by]
    if bucket or columns:
        groups = sorted(reports.grouped(usage_filter, columns, bucket=bucket), key=lambda item: str(item[0][0]))
        body["data"] = [{"group": _group_label(values[0]), **figures.as_json()} for values, figures in groups]
    return HttpResponse(orjson.dumps(body), content_type="application/json")
