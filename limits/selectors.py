"""Reads about API keys for the admin and commands: a key's limits and its current usage against them.

Blocking (database and shared state): never call it from the event loop."""

from __future__ import annotations

from typing import Any

from limits import base
from limits.concurrency import slot_counters
from limits.quotas import COUNTER_BASE, METRICS, QUOTA_GRACE_S, period_bounds, quota_counter, usage_from_log_sync
from limits.rate import rpm_counter
from limits.tokens import tpm_counter
from rainymodel_site.shared_state import SharedStateUnavailable


def usage_for_key_sync(key_id: int) -> dict:
    """A key's limits, its current usage against each limit and quota, and its last use, for the admin.

    Blocking (database and shared state): admin pages and commands only. Missing quota counters are rebuilt from
    the log exactly as the request path would (SET NX), so looking at a key never double-counts it. When the shared
    state is unreachable, quota usage comes from the log and `shared_state_error` says why the rest is missing.
    """
    from apikeys.models import APIKey

    api_key = APIKey.objects.prefetch_related("quotas").get(pk=key_id)
    now = base.utcnow()
    subject = base.Subject("key", api_key.id, api_key.prefix)
    store = base.store()
    out: dict[str, Any] = {
        "key_id": api_key.id,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "last_used_at": api_key.last_used_at,
        "limits": {
            "rpm_limit": api_key.rpm_limit,
            "tpm_limit": api_key.tpm_limit,
            "max_concurrent": api_key.max_concurrent,
        },
        "current": None,  # {"requests_this_minute", "tokens_this_minute", "in_flight"}
        "quotas": [],
        "shared_state_error": None,
    }
    slots = slot_counters(subject, api_key.max_concurrent)
    try:
        values = store.get_many_sync([rpm_counter(subject), tpm_counter(subject), *slots])
        out["current"] = {
            "requests_this_minute": int(values.get(rpm_counter(subject)) or 0),
            "tokens_this_minute": int(values.get(tpm_counter(subject)) or 0),
            "in_flight": sum(1 for s in slots if s in values),
        }
    except SharedStateUnavailable as exc:
        out["shared_state_error"] = str(exc)

    for quota in sorted(api_key.quotas.all(), key=lambda q: q.period):
        start, end = period_bounds(quota.period, now)
        maxima = {
            "requests": quota.max_requests,
            "tokens": quota.max_tokens,
            "cost": None if quota.max_cost_usd is None else float(quota.max_cost_usd),
        }
        used = _quota_usage_sync(store, api_key.id, quota.period, start, end, maxima, now, out)
        out["quotas"].append(
            {
                "period": quota.period,
                "period_start": start,
                "resets_at": end,
                **{metric: {"used": used[metric], "max": maxima[metric]} for metric in METRICS},
            }
        )
    return out


def _quota_usage_sync(store, key_id, period, start, end, maxima, now, out) -> dict[str, float]:
    counters = {m: quota_counter(key_id, period, start, m) for m in METRICS}
    from_log = None
    values = {}
    if out["shared_state_error"] is None:
        try:
            values = store.get_many_sync([counters[m] for m in METRICS if maxima[m] is not None])
        except SharedStateUnavailable as exc:
            out["shared_state_error"] = str(exc)
    used = {}
    for metric in METRICS:
        counter = counters[metric]
        if maxima[metric] is not None and counter in values:
            used[metric] = values[counter] - COUNTER_BASE
            continue
        if from_log is None:
            from_log = usage_from_log_sync(key_id, start, end)
        used[metric] = from_log[metric]
        if maxima[metric] is not None and out["shared_state_error"] is None:
            try:  # warm the counter as admit would, so the next request does not rebuild it again
                store.add_sync(counter, COUNTER_BASE + from_log[metric], (end - now).total_seconds() + QUOTA_GRACE_S)
            except SharedStateUnavailable as exc:
                out["shared_state_error"] = str(exc)
    return used
