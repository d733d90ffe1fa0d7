"""The API's outer edge: the only middleware of the /v1/ handler (rainymodel_site.asgi.ApiHandler).

- `x-request-id` on every API response (SPEC §5): the client's `X-Request-ID` when it is a sane token, else a new
  one. The chat-completions flow sets its own (it is also the RequestLog id); this covers everything else under
  /v1/, errors included.
- The ALLOWED_HOSTS check, which in Django lives in the middleware /v1/ does not run: a Host outside it gets an
  OpenAI-shaped 400 `invalid_host`, and a chat-completions call is logged like any other rejected call.
"""

import re
import uuid

from django.core.exceptions import DisallowedHost

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def request_id_of(request) -> tuple[str, bool]:
    """(request id, whether it is the client's own)."""
    given = request.headers.get("x-request-id", "")
    if SANE_REQUEST_ID.match(given):
        return given, True
    return "req_" + uuid.uuid4().hex, False


class RequestIdMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response

    async def __call__(self, request):
        if request.path.startswith("/v1/"):
            try:
                request.get_host()
            except DisallowedHost:
                from routing.proxy import flow

                return await flow.reject_early(request, 400, "invalid_host", "The Host header is not allowed here.")
        response = await self.get_response(request)
        if request.path.startswith("/v1/") and "x-request-id" not in response:
            response["x-request-id"] = request_id_of(request)[0]
        return response
