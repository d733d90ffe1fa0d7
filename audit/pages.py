"""The audit trail's admin pages: each audited object's History page (`HistoryAdmin`, the base of their admins) and
one list of all recent changes across the audited models (`all_changes`, /admin/changes/).

Both only read the historical tables (audit/history.py); the history is a record, not an undo button, so neither
offers a revert (SIMPLE_HISTORY_REVERT_DISABLED). A staff user sees the changes of the models they may view.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.core.paginator import Paginator
from django.db import models
from django.db.models import CharField, Value
from django.http import HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.text import capfirst
from simple_history.admin import SimpleHistoryAdmin
from simple_history.template_utils import HistoricalRecordContextHelper
from simple_history.utils import get_history_model_for_model

from audit.history import AUDITED

PAGE_SIZE = 50
EMPTY: tuple[object, ...] = (None, "", [], {})
COLUMNS = ("model_label", "history_id", "history_date")


class ChangeText(HistoricalRecordContextHelper):
    """simple-history's diff text, with times to the second in UTC rather than Python's repr with microseconds."""

    def prepare_delta_change_value(self, change, value):
        if isinstance(value, datetime):
            return f"{timezone.localtime(value, UTC):%Y-%m-%d %H:%M:%S}"
        return super().prepare_delta_change_value(change, value)


class HistoryAdmin(SimpleHistoryAdmin):
    """An audited model's admin: its History page lists every version with who, from where, why and the field diff.

    `history_children` names the models edited inline on this page, as (app_label.model, field pointing here), so the
    History page links to their changes in the list of all changes (an alias's routes, a key's quotas)."""

    object_history_template = "admin/audit/object_history.html"
    object_history_list_template = "admin/audit/object_history_list.html"
    history_children: tuple[tuple[str, str], ...] = ()

    def get_historical_record_context_helper(self, request, historical_record):
        return ChangeText(self.model, historical_record)

    def get_history_queryset(self, request, history_manager, pk_name, object_id):
        # simple-history's own calls select_related() without names when a model has no foreign key, which
        # Django deprecates.
        records = history_manager.filter(**{pk_name: object_id}).select_related("history_user")
        related = [f.name for f in history_manager.model.tracked_fields if isinstance(f, models.ForeignKey)]
        return records.select_related(*related) if related else records

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        # A past version is shown, never saved back: simple-history would save a POST even with revert disabled.
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return super().history_form_view(request, object_id, version_id, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        links = [
            (label, f"{reverse('audit-changes')}?{urlencode({'model': label, field: object_id})}")
            for label, field in self.history_children
        ]
        links.append(
            ("all", f"{reverse('audit-changes')}?{urlencode({'model': self.opts.label_lower, 'id': object_id})}")
        )
        extra_context = {**(extra_context or {}), "audit_links": links}
        return super().history_view(request, object_id, extra_context)


def _visible(user) -> list[type[models.Model]]:
    return [m for m in AUDITED if user.has_perm(f"{m._meta.app_label}.view_{m._meta.model_name}")]


def _filtered(model: type[models.Model], params) -> models.QuerySet:
    """The historical rows of `model` that the list's filters keep."""
    historical = get_history_model_for_model(model)
    rows = historical.objects.all()
    if params.get("source"):
        rows = rows.filter(history_source=params["source"])
    if params.get("actor"):
        rows = rows.filter(history_actor__icontains=params["actor"])
    if params.get("type") in ("+", "~", "-"):
        rows = rows.filter(history_type=params["type"])
    if params.get("model") == model._meta.label_lower:
        # One object (`id`), or the objects pointing at one (`alias=3`: that alias's routes).
        for field in historical._meta.concrete_fields:
            value = params.get(field.name)
            if value and field.name in ("id", *(f.name for f in model._meta.concrete_fields if f.many_to_one)):
                if not value.isdigit():
                    return rows.none()
                rows = rows.filter(**{field.attname: int(value)})
    return rows


def _object_name(record) -> str:
    try:
        return str(record.history_object)
    except ObjectDoesNotExist:  # its __str__ names a related object that is gone (a route's alias)
        return f"{record.instance_type._meta.verbose_name} #{record.id}"


def _changes(model: type[models.Model], record) -> list[dict[str, Any]]:
    """What a row changed: the field diff against the version before it; for a creation, the values it was made
    with (empty ones left out)."""
    helper = ChangeText(model, record)
    if record.history_type == "~":
        previous = record.prev_record
        if previous is not None:
            return helper.context_for_delta_changes(record.diff_against(previous))
        return []
    if record.history_type == "+":
        shown = []
        for field in model._meta.concrete_fields:
            if field.primary_key or not hasattr(record, field.attname):
                continue
            value = getattr(record, field.attname)
            if value in EMPTY:
                continue
            if field.many_to_one:
                try:
                    value = getattr(record, field.name)
                except ObjectDoesNotExist:  # deleted since: its id is all there is
                    pass
            if isinstance(value, datetime):
                value = f"{timezone.localtime(value, UTC):%Y-%m-%d %H:%M:%S}"
            shown.append({"field": capfirst(field.verbose_name), "old": None, "new": value})
        return shown
    return []


def _history_url(model: type[models.Model], object_id) -> str | None:
    if model not in admin.site._registry:
        return None
    try:
        return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_history", args=[object_id])
    except NoReverseMatch:
        return None


def _sources(audited: list[type[models.Model]]) -> list[str]:
    """Every source recorded so far, for the filter (the historical tables are small: one row per change)."""
    found: set[str] = set()
    for model in audited:
        rows = get_history_model_for_model(model).objects.order_by()
        found.update(rows.values_list("history_source", flat=True).distinct())
    return sorted(found)


def all_changes(request):
    """Every recorded change to the audited models, newest first, 50 a page; filters: model, source, actor, kind."""
    params = request.GET
    models_seen = _visible(request.user)
    chosen = [m for m in models_seen if params.get("model") in (None, "", m._meta.label_lower)]
    queries = [
        _filtered(m, params)
        .order_by()
        .annotate(model_label=Value(m._meta.label_lower, output_field=CharField()))
        .values(*COLUMNS)
        for m in chosen
    ]
    page = None
    rows = []
    if queries:
        combined = queries[0].union(*queries[1:], all=True) if len(queries) > 1 else queries[0]
        page = Paginator(combined.order_by("-history_date", "-history_id"), PAGE_SIZE).get_page(params.get("p"))
        by_label = {m._meta.label_lower: m for m in chosen}
        wanted: dict[str, list[int]] = {}
        for entry in page.object_list:
            wanted.setdefault(entry["model_label"], []).append(entry["history_id"])
        records = {}
        for label, ids in wanted.items():
            historical = get_history_model_for_model(by_label[label])
            for record in historical.objects.filter(history_id__in=ids).select_related("history_user"):
                records[label, record.history_id] = record
        for entry in page.object_list:
            model = by_label[entry["model_label"]]
            record = records[entry["model_label"], entry["history_id"]]
            rows.append(
                {
                    "record": record,
                    "model": model._meta.verbose_name,
                    "object": _object_name(record),
                    "history_url": _history_url(model, record.id),
                    "object_url": f"?{urlencode({'model': model._meta.label_lower, 'id': record.id})}",
                    "changes": _changes(model, record),
                }
            )
    query_without_page = urlencode([(k, v) for k, v in params.items() if k != "p" and v])
    context = {
        **admin.site.each_context(request),
        "title": "All changes",
        "subtitle": None,
        "rows": rows,
        "page": page,
        "query": query_without_page,
        "models": [(m._meta.label_lower, m._meta.verbose_name) for m in models_seen],
        "params": params,
        "sources": _sources(models_seen),
    }
    return TemplateResponse(request, "admin/audit/changes.html", context)
