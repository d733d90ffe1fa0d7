"""Request ids under /v1/: `request_id_of` (the one place that picks one) and the /v1/ handler's only middleware
(rainymodel_site.asgi.ApiHandler).

- `x-request-id` on every API response (SPEC §5): the client's `X-Request-ID` when it is a sane token, else a new
  one. The chat-completions flow sets its own (it is also the RequestLog id); this covers everything else under
  /v1/, errors included.

The ALLOWED_HOSTS check (OpenAI-shaped 400 `invalid_host`) is not here: it runs with the other checks that must
come before the body is read, in rainymodel_site.asgi.refuse_before_body.
"""

import re
import uuid

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
        response = await self.get_response(request)
        if request.path.startswith("/v1/") and "x-request-id" not in response:
            response["x-request-id"] = request_id_of(request)[0]
        return response
