"""What the audited models use: django-simple-history's HistoricalRecords, told who made a change and from where.

A model declares `history = audited(excluded_fields=[...], redact={...})`. Every create, change and delete of it
then writes one row to its historical table (HistoricalProvider, HistoricalAPIKey, ...) holding the object's
recorded fields as they were, and:

- `history_user`: the user who made the change, when one is known (a link; set to null if the user is deleted);
- `history_actor`: who, as text that outlives the user ("alice", "deploy (OS user)", "alice (OS user deploy)");
- `history_source`: where from: "admin", "usage pages", "routing import", "apikey create", "manage.py NAME", ...;
- `history_change_reason`: why, when known (the file a `routing import` read, "secret rotated").

Who and where come from, in this order: `acting(...)` around the work (management commands use
`acting_as_command`, which takes `--actor` and the OS user); else the web request simple-history's middleware hands
over (the signed-in user); else the process: `manage.py NAME` or "code", with the OS user.

Never recorded: `excluded_fields` (a key's HMACs, which are secret-derived) and what `redact` masks (a provider's
credential-looking extra headers and a password in a base URL). A save that changes no recorded field (an
unchanged entry of a `routing import`, "Save" without edits) writes no row, unless the object carries a reason of
its own (a key rotation changes only the excluded HMAC and says so).

Never on the request path: the audited models are written only by configuration changes. The log writer's
`last_used_at` updates are queryset updates, which send no signal and so write no history.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models.signals import pre_delete
from simple_history.models import HistoricalRecords
from simple_history.signals import pre_create_historical_record
from simple_history.utils import get_change_reason_from_object

SOURCE_ADMIN = "admin"
SOURCE_USAGE_PAGES = "usage pages"
SOURCE_CODE = "code (shell or script)"
HIDDEN = "(hidden)"
# A header whose name says it carries a credential; its value is never recorded (docs/observability.md).
CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|session|signature|credential", re.IGNORECASE)
COMMAND_NAME = re.compile(r"[a-z_][a-z0-9_-]*")


@dataclass(frozen=True)
class Acting:
    """Who is making the changes inside an `acting` block, and from where."""

    source: str
    actor: str
    user: Any = None  # the user `actor` names, when one exists: recorded as history_user
    reason: str = ""


_acting: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("audit_acting", default=None)


@contextmanager
def acting(*, source: str, actor: str, user=None, reason: str = "") -> Iterator[None]:
    """Record the changes made inside this block as made by `actor` (and `user`) from `source`."""
    token = _acting.set(Acting(source=source, actor=actor, user=user, reason=reason))
    try:
        yield
    finally:
        _acting.reset(token)


def os_user() -> str:
    try:
        return getpass.getuser()
    except OSError:  # no USER/LOGNAME and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def acting_as_command(source: str, actor: str | None = None, *, reason: str = ""):
    """`acting` for a management command: the actor is `--actor` when given, else the OS user running it.

    `--actor` is a claim by whoever can run commands on the server (who could change the database anyway), so the OS
    user is kept beside it; when it names an existing user, that user is also linked as history_user.
    """
    account = os_user()
    name = (actor or "").strip()
    if not name:
        return acting(source=source, actor=f"{account} (OS user)", reason=reason)
    User = get_user_model()
    user = User._default_manager.filter(**{User.USERNAME_FIELD: name}).first()
    return acting(source=source, actor=f"{name} (OS user {account})", user=user, reason=reason)


def add_actor_argument(parser) -> None:
    """The `--actor` option of the commands that change audited models."""
    parser.add_argument(
        "--actor",
        metavar="NAME",
        help="Who is making this change, for the audit trail (default: the OS user running the command).",
    )


# --- masks: values recorded in place of what must never be stored -------------------------------------------------


def hide_credential_headers(headers):
    """A headers mapping with the values of credential-looking headers (Authorization, X-Api-Key, ...) hidden."""
    if not isinstance(headers, dict):
        return headers
    return {name: HIDDEN if CREDENTIAL_HEADER.search(str(name)) else value for name, value in headers.items()}


def hide_url_password(url):
    """A URL with the password of its user-info part hidden (https://user:(hidden)@host/v1)."""
    if not isinstance(url, str) or "@" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{HIDDEN}@{host}"))


# --- the historical models --------------------------------------------------------------------------------------


class AuditedChange(models.Model):
    """The columns every historical table adds to simple-history's own (history_date, history_type, ...)."""

    history_source = models.CharField(
        "source", max_length=100, blank=True, help_text="Where the change was made: admin, usage pages, a command."
    )
    history_actor = models.CharField(
        "by", max_length=200, blank=True, help_text="Who made it, as text that outlives the user."
    )

    class Meta:
        abstract = True


AUDITED: list[type[models.Model]] = []


class AuditedRecords(HistoricalRecords):
    """HistoricalRecords with who and where (AuditedChange), masked values, and no row for a save that changed
    nothing recorded."""

    def __init__(self, *, redact: dict[str, Callable[[Any], Any]] | None = None, **kwargs):
        super().__init__(bases=[AuditedChange], get_user=_history_user, **kwargs)
        self.redact = dict(redact or {})

    def finalize(self, sender, **kwargs):
        super().finalize(sender, **kwargs)
        if sender is self.cls:
            AUDITED.append(sender)

    def get_extra_fields(self, model, fields):
        extra = super().get_extra_fields(model, fields)
        extra["audit_redact"] = self.redact  # read by _fill_in below, on the historical model
        return extra

    def get_change_reason_for_object(self, instance, history_type, using):
        reason = super().get_change_reason_for_object(instance, history_type, using)
        if not reason:
            current = _acting.get()
            reason = current.reason if current is not None else ""
        return str(reason)[:100] if reason else None  # the column holds 100 characters

    def post_save(self, instance, created, using=None, **kwargs):
        if not getattr(settings, "SIMPLE_HISTORY_ENABLED", True):
            return
        if not created and not kwargs.get("raw", False) and self._nothing_new(instance):
            return
        super().post_save(instance, created, using=using, **kwargs)

    def _nothing_new(self, instance) -> bool:
        """Whether every recorded field equals the latest historical row (and the save gives no reason)."""
        if get_change_reason_from_object(instance):
            return False
        latest = getattr(instance, self.manager_name).first()
        if latest is None or latest.history_type == "-":
            return False
        for field in self.fields_included(instance):
            value = getattr(instance, field.attname)
            if field.name in self.redact:
                value = self.redact[field.name](value)
            if getattr(latest, field.attname) != value:
                return False
        return True


def audited(*, excluded_fields=(), redact: dict[str, Callable[[Any], Any]] | None = None) -> AuditedRecords:
    """The `history` attribute of an audited model. `excluded_fields` are never recorded (secrets, secret-derived
    values, bookkeeping such as last_used_at); `redact` maps a field to the function giving the value recorded
    in its place."""
    return AuditedRecords(excluded_fields=list(excluded_fields), redact=redact)


def _history_user(request=None, instance=None, **kwargs):
    current = _acting.get()
    if current is not None:
        return current.user
    return getattr(request, "user", None) if request is not None else None


def _origin() -> tuple[str, str]:
    """(source, actor) of the change being recorded now."""
    current = _acting.get()
    if current is not None:
        return current.source, current.actor
    request = getattr(HistoricalRecords.context, "request", None)
    if request is not None:
        user = getattr(request, "user", None)
        who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
        match = getattr(request, "resolver_match", None)
        if match is not None and "admin" in match.namespaces:
            return SOURCE_ADMIN, who
        if request.path.startswith("/usage/"):
            return SOURCE_USAGE_PAGES, who
        return f"web {request.path[:80]}", who
    argv = sys.argv
    if len(argv) > 1 and os.path.basename(argv[0]) == "manage.py" and COMMAND_NAME.fullmatch(argv[1]):
        # Only the command's name: its arguments may hold a key (`apikey revoke rm-...`).
        return f"manage.py {argv[1]}", f"{os_user()} (OS user)"
    return SOURCE_CODE, f"{os_user()} (OS user)"


def _fill_in(sender, instance, history_instance, **kwargs) -> None:
    if not isinstance(history_instance, AuditedChange):
        return
    for name, mask in getattr(sender, "audit_redact", {}).items():
        attname = instance._meta.get_field(name).attname
        setattr(history_instance, attname, mask(getattr(history_instance, attname)))
    source, actor = _origin()
    history_instance.history_source = source[:100]
    history_instance.history_actor = actor[:200]


pre_create_historical_record.connect(_fill_in, dispatch_uid="audit-fill-in")


# --- pointers Django clears without a signal ----------------------------------------------------------------------


def _clear_before_delete(model, field, sender, instance, **kwargs) -> None:
    for obj in model._default_manager.filter(**{field.name: instance}):
        setattr(obj, field.name, None)
        obj.save(update_fields=[field.name])


def record_set_null_relations() -> None:
    """Deleting a row that audited rows point at with on_delete=SET_NULL (a policy an alias or key defaults to, the
    alias that is the catch-all, a key's owner) makes Django clear those pointers with one UPDATE, which no signal
    sees and so no history records. Clear them first, one save each (inside the delete's transaction), so it does.
    Called once, from AuditConfig.ready()."""
    for model in AUDITED:
        for field in model._meta.concrete_fields:
            relation = field.remote_field
            if field.many_to_one and relation is not None and relation.on_delete is models.SET_NULL:
                pre_delete.connect(
                    partial(_clear_before_delete, model, field),
                    sender=field.related_model,
                    weak=False,
                    dispatch_uid=f"audit-set-null-{model._meta.label}-{field.name}",
                )
