"""Every committed change to routing config or keys bumps the shared config version, so each worker's snapshot
is rebuilt within `RAINYMODEL_SNAPSHOT_POLL_S` (SPEC §10: admin saves reach every worker within 2 s)."""

import contextvars
from contextlib import contextmanager

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apikeys.models import APIKey, Quota
from routing.models import Alias, Policy, Provider, Route, RoutingSettings
from routing.snapshot import bump_version

WATCHED = (Provider, Alias, Route, Policy, RoutingSettings, APIKey, Quota)
_muted = contextvars.ContextVar("routing_signals_muted", default=False)


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


for model in WATCHED:
    post_save.connect(_changed, sender=model, dispatch_uid=f"bump-{model.__name__}-save")
    post_delete.connect(_changed, sender=model, dispatch_uid=f"bump-{model.__name__}-delete")
