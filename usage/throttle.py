"""Per-user request rates for the usage pages and CSV exports, counted with django-ratelimit on the shared cache
(Redis when `REDIS_URL` is set, so the counts hold across workers).

- `RAINYMODEL_USAGE_PAGES_RATE` (default `120/m`): page views per signed-in user;
- `RAINYMODEL_USAGE_CSV_RATE` (default `10/m`): CSV exports per user (`/usage/log.csv` and `?format=csv` of the
  breakdown), which read far more rows than a page.

Past a rate the view is not run: the answer is a styled 429 page with `Retry-After`. The pages are sync views, which
is what django-ratelimit is made for; the /v1/ limits are counted natively instead (docs/limits.md says why). If the
cache is unreachable the pages are served unthrottled (logged): the limit protects the database, not a secret."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.shortcuts import render
from django_ratelimit.core import get_usage

log = logging.getLogger(__name__)


def throttled(*, csv: bool = False):
    """Decorate a usage view (inside `login_required`): refuse with 429 past the user's rate. `csv=True` for a view
    that always exports; other views count `?format=csv` as an export too."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            export = csv or request.GET.get("format") == "csv"
            group, rate = (
                ("rainymodel.usage-csv", settings.RAINYMODEL_USAGE_CSV_RATE)
                if export
                else ("rainymodel.usage-pages", settings.RAINYMODEL_USAGE_PAGES_RATE)
            )
            try:
                usage = get_usage(request, group=group, key="user_or_ip", rate=rate, increment=True)
            except Exception as exc:  # cache unreachable: fail open
                log.warning("usage page throttling skipped: the cache is unreachable (%s)", type(exc).__name__)
                usage = None
            if usage is not None and usage["should_limit"]:
                wait = max(1, int(usage["time_left"]))
                response = render(request, "429.html", {"wait": wait, "export": export}, status=429)
                response["Retry-After"] = str(wait)
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
