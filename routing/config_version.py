"""The shared config version: one number that every committed change to routing config or API keys bumps, so each
worker's snapshot (routing/snapshot.py) is rebuilt within `RAINYMODEL_SNAPSHOT_POLL_S` (SPEC §10: admin saves
reach every worker within 2 s).

It lives in the shared store when that is shared (Redis), else in the ConfigVersion row. Each app bumps it from its
own signals (`watch`, called from routing/signals.py and apikeys/signals.py) and `routing import` bumps it once
(`single_bump`). This module knows nothing of the snapshot: the snapshot reads `read_version()` and compares
`local_bumps`, so a change made in this process is seen without waiting for the poller.
"""

import contextvars
import logging
from contextlib import contextmanager

from django.db import transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from rainymodel_site.shared_state import SharedStateUnavailable, state
from routing.models import ConfigVersion

log = logging.getLogger("routing.snapshot")
VERSION_KEY = "config:version"
# Bumps made by this process since it started; the snapshot rebuilds when it has not seen the latest one.
local_bumps = 0
_muted = contextvars.ContextVar("routing_signals_muted", default=False)


def read_version() -> int:
    """The shared config version: from the shared store when it is shared (Redis), else the database row."""
    if state().shared:
        value = state().get_sync(VERSION_KEY)
        if value is not None:
            return int(value)
    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(row or 0)


def bump_version() -> None:
    """Mark the configuration as changed. Called after every committed change (signals, imports, commands)."""
    global local_bumps
    updated = ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})
    try:
        if state().shared:
            state().incr_sync(VERSION_KEY, 1)
    except SharedStateUnavailable:
        log.warning("config version bumped in the database but the shared store is unreachable")
    # This process need not wait for its own poller.
    local_bumps += 1


@contextmanager
def single_bump():
    """Saves inside this block do not each bump the version; the caller bumps once (e.g. a whole `routing import`)."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def _changed(sender, **kwargs):
    if _muted.get():
        return
    # last_used_at updates from the log writer are not configuration changes.
    update_fields = kwargs.get("update_fields")
    if update_fields and set(update_fields) <= {"last_used_at"}:
        return
    transaction.on_commit(bump_version)


def watch(*models) -> None:
    """Bump the version after every committed save or delete of these models."""
    for model in models:
        post_save.connect(_changed, sender=model, dispatch_uid=f"bump-{model.__name__}-save")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"bump-{model.__name__}-delete")
