"""The usage pages: overview, breakdowns, keys, request log (and one row of it, explained) and CSV exports. Thin
doors: each view parses the filters (usage.filters), asks usage.reports, and renders a template under
templates/usage/.

Staff see all traffic; any other signed-in user sees only the keys they own, and a URL naming someone else's key
answers 404 — never their data.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.sessions.backends.signed_cookies import SessionStore as CookieSessionStore
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apikeys.models import APIKey, UserLimits
from apikeys.services import (
    CapExceeded,
    apikey_caps_for,
    apikey_create_for_user,
    apikey_max_grace,
    apikey_revoke,
    apikey_rotate,
)
from routing.models import Alias, Policy, Provider
from routing.tiers import TIERS
from usage import charts, explanations, reports
from usage.filters import (
    ENDPOINT_NAMES,
    NO_TIER,
    PRESETS,
    FilterError,
    KeyNotVisible,
    UsageFilter,
    for_key,
    parse_filters,
    visible_key_ids,
)
from usage.models import RequestLog
from usage.throttle import throttled

LOG_CSV_COLUMNS = (
    "id",
    "created_at",
    "endpoint",
    "key_prefix",
    "key_name",
    "requested_model",
    "alias",
    "policy",
    "tier",
    "provider",
    "upstream_model",
    "status",
    "error_code",
    "stream",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "cost_usd",
    "fallback",
    "client_ip",
    "user_agent",
)
BREAKDOWN_CSV_COLUMNS = (
    "group",
    "requests",
    "errors",
    "error_rate",
    "fallbacks",
    "fallback_rate",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms_p50",
    "latency_ms_p95",
    "ttft_ms_p50",
    "ttft_ms_p95",
)


def _filters(request) -> UsageFilter:
    try:
        return parse_filters(request.GET, request.user)
    except KeyNotVisible:
        raise Http404("No such key") from None


def _bad_request(request, error: FilterError) -> HttpResponse:
    return render(request, "usage/error.html", {"error": error}, status=400)


def _filter_choices(request, f: UsageFilter) -> dict:
    """The options of the filter form: only names the viewer may see."""
    keys = APIKey.objects.order_by("name")
    if f.visible_key_ids is not None:
        keys = keys.filter(id__in=f.visible_key_ids)
    return {
        "presets": list(PRESETS),
        "key_choices": [(str(k.id), f"{k.name} ({k.prefix}…)") for k in keys],
        "alias_choices": list(Alias.objects.order_by("name").values_list("name", flat=True)),
        "policy_choices": list(Policy.objects.order_by("name").values_list("name", flat=True)),
        "provider_choices": list(Provider.objects.order_by("name").values_list("name", flat=True)),
        "tier_choices": [*TIERS, NO_TIER],
        "endpoint_choices": list(ENDPOINT_NAMES),
        "is_staff": request.user.is_staff,
    }


def _context(request, f: UsageFilter, **extra) -> dict:
    return {"f": f, "query": f.query_items(), "qs": urlencode(f.query_items()), **_filter_choices(request, f), **extra}


def _charts(series: reports.Series, bucket: str) -> dict:
    requests = sum(sum(counts) for counts in series.requests.values())
    # Requests that cost nothing (free and internal tiers, errors) are not "no requests".
    no_cost = (
        f"Cost was $0 for the {requests:,} request{'s' if requests != 1 else ''} in this period"
        if requests
        else charts.NO_REQUESTS
    )
    return {
        "requests_chart": charts.stacked_bars(series.buckets, series.requests, bucket=bucket, unit="requests"),
        "cost_chart": charts.stacked_bars(
            series.buckets, series.cost, bucket=bucket, unit="usd", empty_message=no_cost
        ),
    }


@login_required
@throttled()
def overview(request):
    try:
        f = _filters(request)
    except FilterError as error:
        return _bad_request(request, error)
    data = reports.overview(f)
    return render(
        request,
        "usage/overview.html",
        _context(
            request,
            f,
            page="overview",
            **data,
            **_charts(data["series"], f.period.bucket),
            tiers=[(t or NO_TIER, charts.TIER_LABELS[t], data["series"].tier_requests[t]) for t in charts.STACK_ORDER],
        ),
    )


@login_required
@throttled()
def breakdown(request):
    by = request.GET.get("by") or "alias"
    if by not in reports.BREAKDOWNS:
        return _bad_request(request, FilterError("by", f"'by' must be one of {', '.join(reports.BREAKDOWNS)}."))
    try:
        f = _filters(request)
    except FilterError as error:
        return _bad_request(request, error)
    table = reports.breakdown(f, by)
    if request.GET.get("format") == "csv":
        return _breakdown_csv(table, by)
    total = reports.Figures()
    for row in table:
        total.add(row["figures"])
    return render(
        request,
        "usage/breakdown.html",
        _context(request, f, page="breakdown", by=by, breakdowns=list(reports.BREAKDOWNS), table=table, total=total),
    )


# --- CSV exports ---------------------------------------------------------------------------------------------------

# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection"); model names, user
# agents and key names are chosen by clients.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_FLUSH_CHARS = 64 * 1024  # send the export in pieces of about this size


def csv_cell(value) -> str | int | bool:
    """One CSV cell: text that a spreadsheet would run as a formula gets OWASP's leading single quote; numbers are
    written as plain decimals ("0.00000087", never "8.7E-7" or "0E-8"); None is empty."""
    if value is None:
        return ""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0.0") else text
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _breakdown_csv(table: list[dict], by: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-by-{by}.csv"'
    writer = csv.writer(response)
    writer.writerow(BREAKDOWN_CSV_COLUMNS)
    for row in table:
        figures = row["figures"].as_json()
        figures["cost_usd"] = round(row["figures"].cost_usd, 8)  # the exact Decimal, not as_json's float
        writer.writerow([csv_cell(row["label"]), *(csv_cell(figures[c]) for c in BREAKDOWN_CSV_COLUMNS[1:])])
    return response


@login_required
@throttled()
def keys(request):
    try:
        f = _filters(request)
    except FilterError as error:
        return _bad_request(request, error)
    table = {row["key_id"]: row for row in reports.breakdown(f, "key") if row["key_id"]}
    api_keys = APIKey.objects.select_related("owner").order_by("name")
    if f.visible_key_ids is not None:
        api_keys = api_keys.filter(id__in=f.visible_key_ids)
    rows = [{"key": k, "figures": table[k.id]["figures"] if k.id in table else reports.Figures()} for k in api_keys]
    now = timezone.now()
    # The signed-in user's own limits, shared by all their keys (issue 14), with this period's use of their quotas.
    user_limits = UserLimits.objects.filter(user=request.user).first()
    user_quotas = (
        reports.user_quota_usage(
            user_limits, APIKey.objects.filter(owner=request.user).values_list("id", flat=True), now
        )
        if user_limits
        else []
    )
    return render(
        request,
        "usage/keys.html",
        _context(request, f, page="keys", rows=rows, now=now, user_limits=user_limits, user_quotas=user_quotas),
    )


@login_required
@throttled()
def key_detail(request, key_id: int):
    visible = visible_key_ids(request.user)
    if visible is not None and key_id not in visible:
        raise Http404("No such key")
    api_key = get_object_or_404(APIKey.objects.select_related("owner"), pk=key_id)
    params = request.GET.copy()
    params.pop("key", None)
    try:
        f = for_key(parse_filters(params, request.user), key_id)
    except FilterError as error:
        return _bad_request(request, error)
    data = reports.overview(f)
    return render(
        request,
        "usage/key_detail.html",
        _context(
            request,
            f,
            page="keys",
            api_key=api_key,
            quotas=reports.quota_usage(api_key, timezone.now()),
            **data,
            **_charts(data["series"], f.period.bucket),
        ),
    )


def _cursor(value: str | None, param: str) -> tuple[datetime, str] | None:
    if not value:
        return None
    when_raw, _, row_id = value.partition("|")
    when = parse_datetime(when_raw)
    if when is None or not row_id:
        raise FilterError(param, f"'{param}' is not a valid page cursor; start again from the first page.")
    return when, row_id


@login_required
@throttled()
def request_log(request):
    try:
        f = _filters(request)
        page = reports.log_page(
            f, before=_cursor(request.GET.get("before"), "before"), after=_cursor(request.GET.get("after"), "after")
        )
    except FilterError as error:
        return _bad_request(request, error)
    rows = page["rows"]
    cursor = lambda row: f"{row.created_at.isoformat()}|{row.id}"  # noqa: E731
    return render(
        request,
        "usage/log.html",
        _context(
            request,
            f,
            page="log",
            rows=rows,
            older_qs=urlencode([*f.query_items(), ("before", cursor(rows[-1]))]) if page["has_older"] else "",
            newer_qs=urlencode([*f.query_items(), ("after", cursor(rows[0]))]) if page["has_newer"] else "",
        ),
    )


@login_required
@throttled()
def request_log_row(request, row_id: str):
    """One request-log row explained: what was asked, how it was routed, each attempt, and why it failed."""
    row = get_object_or_404(RequestLog, pk=row_id)
    visible = visible_key_ids(request.user)
    if visible is not None and row.api_key_id not in visible:
        raise Http404("No such request")
    api_key = APIKey.objects.filter(pk=row.api_key_id).first() if row.api_key_id else None
    attempts = [
        {**attempt, "explanation": explanations.explain_outcome(str(attempt.get("outcome") or ""))}
        for attempt in (row.attempts if isinstance(row.attempts, list) else [])
        if isinstance(attempt, dict)
    ]
    back = request.GET.copy()
    return render(
        request,
        "usage/log_row.html",
        {
            "page": "log",
            "qs": back.urlencode(),
            "row": row,
            "api_key": api_key,
            "attempts": attempts,
            "explanation": explanations.explain_error(row.status, row.error_code),
            "is_staff": request.user.is_staff,
        },
    )


def _log_csv_pieces(f: UsageFilter):
    """The request-log export as pieces of CSV text (blocking: database). The rows come from a server-side cursor
    inside a transaction: outside one, Django asks PostgreSQL for a WITH HOLD cursor, which computes the whole
    result before the first row. Only `_stream_from_one_thread` drives this, so the cursor's connection is only
    ever used from one thread."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LOG_CSV_COLUMNS)
    yield buffer.getvalue()  # the first byte goes out before the query has even started
    buffer.seek(0)
    buffer.truncate()
    keys = APIKey.objects.all() if f.visible_key_ids is None else APIKey.objects.filter(id__in=f.visible_key_ids)
    names = dict(keys.values_list("id", "name"))
    name_at = LOG_CSV_COLUMNS.index("key_name")
    rows = reports.log_rows(f).values_list(*(c for c in LOG_CSV_COLUMNS if c != "key_name"), "api_key_id")
    with transaction.atomic():
        for row in rows.iterator(chunk_size=2000):
            *values, key_id = row
            values.insert(name_at, names.get(key_id, ""))
            writer.writerow([csv_cell(v) for v in values])
            if buffer.tell() >= CSV_FLUSH_CHARS:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


async def _stream_from_one_thread(pieces):
    """Relay a blocking generator piece by piece as an async iterator, each `next()` in a thread.

    `thread_sensitive=True` runs every step on the thread Django's ASGI handler gives this request (and under a
    sync server or the test client, on the caller's thread): the one thread that holds the transaction and the
    server-side cursor. A plain sync iterator would be read whole into memory by Django under ASGI
    (`StreamingHttpResponse.__aiter__`) before the first byte went out."""
    step = sync_to_async(next, thread_sensitive=True)
    try:
        # asgiref types sync_to_async(next) with next's one-argument overload; next(iterator, default) is meant.
        while (piece := await step(pieces, None)) is not None:  # type: ignore[call-arg]
            yield piece
    finally:  # also when the client goes away: end the transaction and free the cursor on their own thread
        await sync_to_async(pieces.close, thread_sensitive=True)()


@login_required
@throttled(csv=True)
def request_log_csv(request):
    """The filtered request log as CSV, streamed as it is read, so an export of millions of rows needs neither
    memory nor a wait for the first byte."""
    try:
        f = _filters(request)
    except FilterError as error:
        return _bad_request(request, error)
    response = StreamingHttpResponse(
        _stream_from_one_thread(_log_csv_pieces(f)), content_type="text/csv; charset=utf-8"
    )
    stamp = f"{f.period.start:%Y%m%dT%H}-{f.period.end:%Y%m%dT%H}"
    response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.csv"'
    return response


# --- self-service keys (docs/users.md) ------------------------------------------------------------------------
# A signed-in user creates, rotates and revokes their OWN keys here, within the caps staff set (apikeys.UserKeyCaps);
# a key someone else owns answers 404, staff included (staff manage other people's keys in the admin). A new or
# rotated key's full secret waits in the server-side session for the one page that shows it, as in the admin
# (apikeys/admin.py), never in a cookie.

NEW_SECRET_SESSION = "usage_new_key"


class _NameChoices(forms.MultipleChoiceField):
    widget = forms.CheckboxSelectMultiple


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What uses the key, e.g. laptop. Unique among your keys.")
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: never.",
    )
    rpm_limit = forms.IntegerField(required=False, min_value=1, label="Requests per minute")
    tpm_limit = forms.IntegerField(required=False, min_value=1, label="Tokens per minute")
    max_concurrent = forms.IntegerField(required=False, min_value=1, label="Requests at once")
    max_requests_per_day = forms.IntegerField(required=False, min_value=1, label="Requests per day")
    max_tokens_per_day = forms.IntegerField(required=False, min_value=1, label="Tokens per day")
    max_cost_usd_per_month = forms.DecimalField(
        required=False, min_value=0, max_digits=14, decimal_places=6, label="Cost per month (USD)"
    )
    allowed_aliases = _NameChoices(required=False, label="Aliases it may call", help_text="None ticked: all you may.")
    allowed_policies = _NameChoices(required=False, label="Policies it may use", help_text="None ticked: all you may.")

    QUOTAS = (
        ("max_requests_per_day", "day", "max_requests"),
        ("max_tokens_per_day", "day", "max_tokens"),
        ("max_cost_usd_per_month", "month", "max_cost_usd"),
    )

    def __init__(self, *args, caps=None, **kwargs):
        super().__init__(*args, **kwargs)
        aliases = (caps.allowed_aliases if caps else None) or list(
            Alias.objects.order_by("name").values_list("name", flat=True)
        )
        policies = (caps.allowed_policies if caps else None) or list(
            Policy.objects.order_by("name").values_list("name", flat=True)
        )
        alias_field, policy_field = self.fields["allowed_aliases"], self.fields["allowed_policies"]
        assert isinstance(alias_field, forms.ChoiceField) and isinstance(policy_field, forms.ChoiceField)
        alias_field.choices = [(n, n) for n in aliases]
        policy_field.choices = [(n, n) for n in policies]
        if caps is not None:
            for field, cap in (
                ("rpm_limit", caps.max_rpm),
                ("tpm_limit", caps.max_tpm),
                ("max_concurrent", caps.max_concurrent),
                ("max_requests_per_day", caps.max_requests_per_day),
                ("max_tokens_per_day", caps.max_tokens_per_day),
                ("max_cost_usd_per_month", caps.max_cost_usd_per_month),
            ):
                if cap is not None:
                    self.fields[field].help_text = f"At most {cap}; empty: {cap}."
        for name in ("rpm_limit", "tpm_limit", "max_concurrent") + tuple(q[0] for q in self.QUOTAS):
            if not self.fields[name].help_text:
                self.fields[name].help_text = "Empty: unlimited."


class KeyRotateForm(forms.Form):
    grace_hours = forms.DecimalField(
        min_value=0,
        max_digits=6,
        decimal_places=2,
        initial=1,
        label="Old secret keeps working for (hours)",
    )


def _own_key(request, key_id: int) -> APIKey:
    """The signed-in user's own key, or 404 (whoever else owns it, and whether it exists, stays unsaid)."""
    return get_object_or_404(APIKey, pk=key_id, owner=request.user)


def _hold_secret(request, api_key: APIKey, full_key: str, action: str):
    request.session[NEW_SECRET_SESSION] = {"id": api_key.id, "name": api_key.name, "key": full_key, "action": action}
    return redirect("usage-key-secret", key_id=api_key.id)


def _cookie_sessions(request) -> bool:
    return isinstance(request.session, CookieSessionStore)


@login_required
@throttled()
def key_create(request):
    caps = apikey_caps_for(user=request.user)
    form = KeyCreateForm(request.POST or None, caps=caps)
    error = None
    if request.method == "POST" and form.is_valid():
        if _cookie_sessions(request):
            error = "Keys cannot be created while sessions are stored in cookies: the new key would travel in one."
        else:
            data = form.cleaned_data
            expires_at = data["expires_at"]
            if expires_at is not None and timezone.is_naive(expires_at):
                expires_at = timezone.make_aware(expires_at, UTC)
            try:
                api_key, full_key = apikey_create_for_user(
                    user=request.user,
                    name=data["name"].strip(),
                    expires_at=expires_at,
                    rpm_limit=data["rpm_limit"],
                    tpm_limit=data["tpm_limit"],
                    max_concurrent=data["max_concurrent"],
                    allowed_aliases=data["allowed_aliases"],
                    allowed_policies=data["allowed_policies"],
                    quotas=[
                        (period, field, data[name]) for name, period, field in form.QUOTAS if data[name] is not None
                    ],
                )
            except CapExceeded as refused:
                error = refused.message
            except ValidationError as invalid:
                error = " ".join(invalid.messages)
            else:
                return _hold_secret(request, api_key, full_key, "created")
    status = 400 if request.method == "POST" else 200
    return render(
        request, "usage/key_create.html", {"page": "keys", "form": form, "error": error, "caps": caps}, status=status
    )


@login_required
@throttled()
def key_secret(request, key_id: int):
    """The one page that shows a new or rotated key's full secret; a reload finds it gone."""
    api_key = _own_key(request, key_id)
    held = request.session.get(NEW_SECRET_SESSION)
    shown = None
    if held and held.get("id") == api_key.id:
        shown = request.session.pop(NEW_SECRET_SESSION)
    response = render(request, "usage/key_secret.html", {"page": "keys", "api_key": api_key, "shown": shown})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@throttled()
def key_rotate(request, key_id: int):
    api_key = _own_key(request, key_id)
    if api_key.revoked_at is not None:
        raise Http404("No such key")
    max_grace = apikey_max_grace(user=request.user)
    form = KeyRotateForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        if _cookie_sessions(request):
            error = "Keys cannot be rotated while sessions are stored in cookies: the new key would travel in one."
        else:
            try:
                api_key, full_key = apikey_rotate(
                    api_key=api_key,
                    grace=timedelta(hours=float(form.cleaned_data["grace_hours"])),
                    max_grace=max_grace,
                )
            except CapExceeded as refused:
                error = refused.message
            else:
                return _hold_secret(request, api_key, full_key, "rotated")
    status = 400 if request.method == "POST" else 200
    context = {
        "page": "keys",
        "api_key": api_key,
        "form": form,
        "error": error,
        "max_grace_hours": max_grace.total_seconds() / 3600,
    }
    return render(request, "usage/key_rotate.html", context, status=status)


@login_required
@throttled()
def key_revoke(request, key_id: int):
    api_key = _own_key(request, key_id)
    if request.method == "POST":
        apikey_revoke(api_key=api_key)
        return redirect("usage-key", key_id=api_key.id)
    return render(request, "usage/key_revoke.html", {"page": "keys", "api_key": api_key})
