"""OpenAI-shaped errors: the one place that builds them (SPEC §5).

Every error an API client can see has the shape {"error": {"message", "type", "param", "code"}}, including
DRF's own exceptions, 404/405 on unknown paths under /v1/, and anything unexpected (a 500 without a traceback).
"""

from __future__ import annotations

import logging

import orjson
from django.http import HttpResponse
from rest_framework import exceptions as drf_exceptions

from rainymodel_site import error_codes as codes

log = logging.getLogger(__name__)

# Default OpenAI error `type` for each status.
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error to return to the API client as-is."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type or TYPES.get(status, "invalid_request_error")
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    return api_error_response(ApiError(status, code, message, type=type, param=param, headers=headers))


def api_error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(orjson.dumps(error.body()), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    return response


def exception_handler(exc, context):
    """DRF exception handler: anything raised in an API view becomes an OpenAI-shaped error.

    The API views have no DRF parsers, authenticators, permissions or throttles (settings.REST_FRAMEWORK; keys are
    checked over the snapshot), so the DRF exceptions they can raise are MethodNotAllowed and, from content
    negotiation, NotAcceptable; any other APIException still gets its own status and code."""
    if isinstance(exc, ApiError):
        return api_error_response(exc)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return error_response(405, codes.METHOD_NOT_ALLOWED, str(exc.detail))
    if isinstance(exc, drf_exceptions.APIException):
        return error_response(exc.status_code, exc.default_code, str(exc.detail))
    log.exception("unhandled error in API view", exc_info=exc)
    return error_response(500, codes.INTERNAL_ERROR, "The server had an error while processing your request.")


def not_found_handler(request, exception=None):
    """404 for any unknown path: OpenAI-shaped under /v1/, a plain page elsewhere."""
    if request.path.startswith("/v1/"):
        return error_response(404, codes.UNKNOWN_URL, f"Unknown request URL: {request.method} {request.path}.")
    return HttpResponse("Not found", status=404, content_type="text/plain")


def server_error_handler(request):
    if request.path.startswith("/v1/"):
        return error_response(500, codes.INTERNAL_ERROR, "The server had an error while processing your request.")
    return HttpResponse("Server error", status=500, content_type="text/plain")
