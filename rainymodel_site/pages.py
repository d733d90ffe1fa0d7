"""The site's browser pages outside /usage/: the landing page at `/`, `/favicon.ico`, and the error handlers.

The error handlers serve two audiences: under /v1/ an API client gets the OpenAI-shaped JSON error that
rainymodel_site.api_errors builds (the one place that builds them); anywhere else a browser gets a styled page
(templates/400.html, 403.html, 404.html, 500.html). No database access here: the landing page is static.
"""

from __future__ import annotations

from functools import cache

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe
from django.views.defaults import server_error as django_server_error

from rainymodel_site import api_errors
from rainymodel_site import error_codes as codes


def _is_api(request) -> bool:
    return request.path.startswith("/v1/")


@require_safe
def home(request):
    """What this site is, where to point an OpenAI client, and where to go next."""
    return render(request, "home.html", {"base_url": request.build_absolute_uri("/v1").rstrip("/")})


@cache
def _favicon() -> bytes:
    path = finders.find("favicon.svg")
    if not isinstance(path, str):
        raise FileNotFoundError("static/favicon.svg is missing")
    with open(path, "rb") as svg:
        return svg.read()


@require_safe
@cache_control(public=True, max_age=7 * 24 * 3600)
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links; they all accept the SVG under that name."""
    return HttpResponse(_favicon(), content_type="image/svg+xml")


def bad_request(request, exception=None):
    if _is_api(request):
        return api_errors.error_response(400, codes.BAD_REQUEST, "The request could not be understood.")
    return render(request, "400.html", status=400)


def permission_denied(request, exception=None):
    if _is_api(request):
        return api_errors.error_response(403, codes.PERMISSION_DENIED, "You may not do this.")
    return render(request, "403.html", status=403)


def not_found(request, exception=None):
    if _is_api(request):
        return api_errors.not_found_handler(request, exception)
    return render(request, "404.html", status=404)


def server_error(request):
    if _is_api(request):
        return api_errors.server_error_handler(request)
    # Django's own handler renders 500.html without a request context: the page must not depend on the
    # database or the session, which may be what failed.
    return django_server_error(request)
