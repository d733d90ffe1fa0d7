"""Thin adrf views: parse nothing, call one function, return its response. The request path lives in flow.py."""


import orjson
from adrf.views import APIView
from django.http import HttpResponse

from apikeys.auth import require_key
from routing import snapshot
from routing.proxy import flow
from routing.proxy.operations.responses import RESPONSES
from rainymodel_site.api_errors import error_response, not_found_handler
from responses_store import store as response_store


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


def unknown_endpoint(request, *args, **kwargs):
    return not_found_handler(request)


class ResponsesView(ApiView):
    """POST /v1/responses: the Responses API, translated onto the chat upstreams (operations/responses.py)."""

    async def post(self, request):
        return await flow.serve(RESPONSES, request._request)


class ResponseDetailView(ApiView):
    """GET and DELETE /v1/responses/{id}: a stored response (`store: true`) of this key; any other id, another
    key's or an expired one is 404 `response_not_found`. Reads and deletes run off the event loop."""

    async def get(self, request, response_id):
        key = await require_key(request._request)
        stored = await response_store.load(response_id, key.id)
        if stored is None:
            return _response_not_found(response_id)
        return HttpResponse(orjson.dumps(stored.response), content_type="application/json")

    async def delete(self, request, response_id):
        key = await require_key(request._request)
        if not await response_store.delete(response_id, key.id):
            return _response_not_found(response_id)
        return HttpResponse(orjson.dumps({"id": response_id, "object": "response.deleted", "deleted": True}),
                            content_type="application/json")


def _response_not_found(response_id: str) -> HttpResponse:
    return error_response(404, "response_not_found", f"Response with id '{response_id}' not found.")
class MessagesView(ApiView):
    """POST /v1/messages: the Anthropic Messages API over the chat upstreams (operations/messages.py)."""

    async def post(self, request):
        from routing.proxy.operations.messages import MESSAGES

        return await flow.serve(MESSAGES, request._request)

    async def async_method_not_allowed(self, request, *args, **kwargs):
        from rainymodel_site import error_codes
        from rainymodel_site.api_errors import ApiError
        from routing.proxy.operations.messages import render_error

        return render_error(ApiError(405, error_codes.METHOD_NOT_ALLOWED, f'Method "{request.method}" not allowed.'))


class CountTokensView(MessagesView):
    """POST /v1/messages/count_tokens: an estimate (`{"input_tokens": N}`), authenticated, with no upstream call
    and no RequestLog row (like /v1/models); errors in Anthropic's shape (docs/api.md)."""

    async def post(self, request):
        from rainymodel_site.api_errors import ApiError
        from routing.proxy.chain import resolve_alias
        from routing.proxy.operations.messages import count_tokens, render_error

        try:
            key = await require_key(request._request)
            payload = flow.parse_body(request._request, lambda payload: None)
            body = count_tokens(payload)  # validates, model included
            resolve_alias(snapshot.current(), payload["model"], key)
        except ApiError as error:
            return render_error(error)
        return HttpResponse(body, content_type="application/json")
