"""Sign-in for the admin (`/admin/login/`) and the usage pages (`/accounts/login/`), with failed sign-ins throttled.

Failed sign-ins are counted with django-ratelimit on the shared cache (Redis when `REDIS_URL` is set, so the counts
hold across workers), per client IP and per username, over fixed windows:

- `RAINYMODEL_LOGIN_FAILURES_PER_IP` (default `10/10m`): guessing from one address;
- `RAINYMODEL_LOGIN_FAILURES_PER_USERNAME` (default `20/h`): guessing one account from many addresses.

Once either is used up, the form refuses every attempt for that IP or username (even the right password) until
the window ends: the page is answered with status 429 and says when to try again, and no password is checked.
Only failures count, so people who type their password right are never slowed down. The client IP is
`REMOTE_ADDR`, i.e. what the ASGI server validated (`FORWARDED_ALLOW_IPS`), never a header taken on trust.

The per-username limit lets someone who knows a username lock its owner out for up to an hour by failing on
purpose; that is the price of stopping slow distributed guessing, and staff can still sign in by another account
or `manage.py changepassword`. If the cache is unreachable, sign-in fails open (logged): authentication itself
still holds.
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django_ratelimit.core import get_usage

log = logging.getLogger(__name__)

GROUP = "rainymodel.login-failures"


def _username_key(group, request) -> str:
    return request.POST.get("username", "").strip().lower()[:150]


def _limits() -> list[tuple[str, object, str]]:
    """(what, django-ratelimit key, rate) for each counter of failed sign-ins."""
    return [
        ("address", "ip", settings.RAINYMODEL_LOGIN_FAILURES_PER_IP),
        ("account", _username_key, settings.RAINYMODEL_LOGIN_FAILURES_PER_USERNAME),
    ]


def _usage(request, key, rate, *, increment: bool) -> dict | None:
    try:
        return get_usage(request, group=GROUP, key=key, rate=rate, method="POST", increment=increment)
    except Exception as exc:  # cache unreachable: fail open, the password check still applies
        log.warning("sign-in throttling skipped: the cache is unreachable (%s)", type(exc).__name__)
        return None


def throttled_for(request) -> int | None:
    """Seconds until this request's IP and username may try again, or None when neither limit is used up."""
    waits = []
    for _, key, rate in _limits():
        usage = _usage(request, key, rate, increment=False)
        if usage and usage["count"] >= usage["limit"]:
            waits.append(max(usage["time_left"], 1))
    return max(waits) if waits else None


def record_failure(request) -> None:
    for _, key, rate in _limits():
        _usage(request, key, rate, increment=True)


class ThrottledFormMixin(AuthenticationForm):
    """An AuthenticationForm that refuses to check passwords once failed sign-ins are used up, and counts its own
    failures. Marks the request so the view can answer 429."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": "Too many failed sign-in attempts. Try again in %(wait)s.",
    }

    def clean(self):
        wait = throttled_for(self.request)
        if wait is not None:
            # A marker on the request for _with_429 (admin.site.login hides the form); HttpRequest does not declare it.
            self.request.login_throttled = True  # type: ignore[union-attr]
            raise ValidationError(self.error_messages["throttled"], code="throttled", params={"wait": _in_words(wait)})
        try:
            return super().clean()
        except ValidationError:
            record_failure(self.request)
            raise


class LoginForm(ThrottledFormMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledFormMixin, AdminAuthenticationForm):
    error_messages = {**AdminAuthenticationForm.error_messages, **ThrottledFormMixin.error_messages}


def _with_429(request, response):
    if getattr(request, "login_throttled", False):
        response.status_code = 429
    return response


class LoginView(auth_views.LoginView):
    """The usage pages' sign-in (templates/registration/login.html)."""

    authentication_form = LoginForm

    def form_invalid(self, form):
        return _with_429(self.request, super().form_invalid(form))


def admin_login(request, extra_context=None):
    """The admin's own login view (its `login_form` is AdminLoginForm, set in rainymodel_site/urls.py), answering
    429 when throttled."""
    return _with_429(request, admin.site.login(request, extra_context))


def _in_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes"
