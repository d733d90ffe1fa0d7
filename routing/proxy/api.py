"""Thin adrf views: parse nothing, call one function, return its response. The request path lives in flow.py."""


import orjson
from adrf.views import APIView
from django.http import HttpResponse

from apikeys.auth import require_key
from routing import snapshot
from routing.proxy import flow
from rainymodel_site.api_errors import not_found_handler


class ApiView(APIView):
    """adrf's APIView, minus one thread hop per request. `async_dispatch` is a copy of adrf 0.1.14's
    (`APIView.async_dispatch`, pinned by tests/test_framework_pins.py) with `initial()` run inline.

    adrf's `async_dispatch` runs DRF's `initial()` (content negotiation, authentication, permissions, throttles)
    through `sync_to_async`, which under ASGI starts and joins a thread for every request. These views have no
    DRF authenticators, permissions or throttles (keys are checked by apikeys.auth.require_key), so `initial()`
    is a few attribute lookups and runs inline.
    """

    async def async_dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None) if request.method.lower() in \
                self.http_method_names else None
            response = await (handler or self.async_method_not_allowed)(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    async def async_method_not_allowed(self, request, *args, **kwargs):
        self.http_method_not_allowed(request, *args, **kwargs)


class ChatCompletionsView(ApiView):
    """POST /v1/chat/completions (SPEC §5)."""

    async def post(self, request):
        return await flow.chat_completions(request._request)


class ModelsView(ApiView):
    """GET /v1/models: the listed, enabled aliases this key may use, each with the endpoints its routes serve
    (`"endpoints": ["chat", "completions"]`, an extra field beside OpenAI's; docs/api.md)."""

    async def get(self, request):
        key = await require_key(request._request)
        snap = snapshot.current()
        data = [
            {"id": alias.name, "object": "model", "created": alias.created, "owned_by": "rainymodel",
             "description": alias.description, "endpoints": list(alias.endpoints)}
            for alias in snap.aliases.values()
            if alias.enabled and alias.listed and (not key.allowed_aliases or alias.name in key.allowed_aliases)
        ]
        return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")


class CompletionsView(ApiView):
    """POST /v1/completions: legacy text completions, `suffix` (FIM) included (operations/completions.py)."""

    async def post(self, request):
        from routing.proxy.operations.completions import COMPLETIONS

        return await flow.serve(COMPLETIONS, request._request)


def unknown_endpoint(request, *args, **kwargs):
    return not_found_handler(request)
