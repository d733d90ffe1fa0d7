"""Thin adrf views: parse nothing, call one function, return its response. The request path lives in flow.py."""

import orjson
from adrf.views import APIView
from django.http import HttpResponse
from rest_framework.negotiation import BaseContentNegotiation

from apikeys.auth import require_key
from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import ApiError, api_error_response, error_response, not_found_handler
from responses_store import store as response_store
from routing import snapshot
from routing.proxy import flow
from routing.proxy.call import Call
from routing.proxy.operations.embeddings import EMBEDDINGS
from routing.proxy.operations.responses import RESPONSES


class AnyAccept(BaseContentNegotiation):
    """The API answers in its own format whatever `Accept` says, as OpenAI's does (DRF's documented
    "IgnoreClientContentNegotiation"). DRF's default parsed `Accept` and the query string on every request
    (bench/request_objects.py: about a third of the view's dispatch) to choose among one renderer, and answered
    `Accept: text/html` or `text/event-stream` with a 406 that no request-log row recorded."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return (renderers[0], renderers[0].media_type)


class ApiView(APIView):
    """adrf's APIView, minus what costs per request and does nothing here. `async_dispatch` is a copy of adrf
    0.1.14's (`APIView.async_dispatch`, pinned by tests/test_framework_pins.py) with `initial()` run inline.

    adrf's `async_dispatch` runs DRF's `initial()` (content negotiation, authentication, permissions, throttles)
    through `sync_to_async`, which under ASGI starts and joins a thread for every request. These views have no
    DRF authenticators, permissions or throttles (keys are checked by apikeys.auth.require_key), so `initial()`
    is a few attribute lookups and runs inline. Content negotiation always picks the one renderer (`AnyAccept`),
    authentication is DRF's lazy form (`perform_authentication` does nothing; there is no authenticator to run),
    and the `Allow` header is worked out once per view class rather than per request.
    """

    content_negotiation_class = AnyAccept

    def perform_authentication(self, request):
        pass  # DRF's documented lazy authentication: `request.user` (None here) would be resolved on first use

    @property
    def default_response_headers(self):
        cls = type(self)
        headers = cls.__dict__.get("_default_response_headers")
        if headers is None:
            headers = super().default_response_headers
            cls._default_response_headers = headers
        return dict(headers)  # a copy: finalize_response pops from it

    async def async_dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = (
                getattr(self, request.method.lower(), None)
                if request.method.lower() in self.http_method_names
                else None
            )
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
        def answer(key) -> dict:
            snap = snapshot.current()
            return {"object": "list", "data": [model_object(a) for a in snap.aliases.values() if is_visible(a, key)]}

        return await logged_lookup(request._request, answer)


def model_object(alias) -> dict:
    """One alias as OpenAI's model object, plus the endpoints its routes serve: the list's entries and the
    retrieve answer are the same object."""
    return {
        "id": alias.name,
        "object": "model",
        "created": alias.created,
        "owned_by": "rainymodel",
        "description": alias.description,
        "endpoints": list(alias.endpoints),
    }


def is_visible(alias, key) -> bool:
    """Whether `key` sees `alias` in /v1/models (and can retrieve it): listed, enabled and allowed to the key."""
    return alias.enabled and alias.listed and (not key.allowed_aliases or alias.name in key.allowed_aliases)


class ModelView(ApiView):
    """GET /v1/models/{id} (ids contain a slash: `rainymodel/auto`): the alias's entry of /v1/models, or 404
    `model_not_found` for anything the key's list does not show (unknown, disabled, unlisted, not allowed)."""

    async def get(self, request, model_id: str):
        def answer(key) -> dict:
            alias = snapshot.current().aliases.get(model_id)
            if alias is None or not is_visible(alias, key):
                raise ApiError(
                    404,
                    codes.MODEL_NOT_FOUND,
                    f"The model '{model_id[:200]}' does not exist or you do not have access to it.",
                    param="model",
                )
            return model_object(alias)

        return await logged_lookup(request._request, answer, requested_model=model_id)


async def logged_lookup(request, answer, requested_model: str = "") -> HttpResponse:
    """A model lookup (list or retrieve) with its one RequestLog row, `endpoint = models` (SPEC §5 "More
    endpoints"): no upstream, no tokens, not admitted by the limits; `answer(key)` builds the body or raises
    ApiError. The response's x-request-id is the row's id."""
    call = Call.begin(request)
    call.endpoint = "models"
    call.requested_model = requested_model
    try:
        call.key = await require_key(request)
        response = HttpResponse(orjson.dumps(answer(call.key)), content_type="application/json")
        await call.finish(200)
    except ApiError as error:
        await call.finish(error.status, error.code)
        response = api_error_response(error)
    except BaseException:
        await call.finish(500, codes.INTERNAL_ERROR)  # the handler answers; the call still keeps its row
        raise
    response["x-request-id"] = call.request_id
    return response


class EmbeddingsView(ApiView):
    """POST /v1/embeddings (operations/embeddings.py)."""

    async def post(self, request):
        return await flow.serve(EMBEDDINGS, request._request)


class CompletionsView(ApiView):
    """POST /v1/completions: legacy text completions, `suffix` (FIM) included (operations/completions.py)."""

    async def post(self, request):
        from routing.proxy.operations.completions import COMPLETIONS

        return await flow.serve(COMPLETIONS, request._request)


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
        stored = await response_store.load(response_id, key.id) if key.id is not None else None
        if stored is None:  # the master key stores nothing (it has no key row)
            return _response_not_found(response_id)
        return HttpResponse(orjson.dumps(stored.response), content_type="application/json")

    async def delete(self, request, response_id):
        key = await require_key(request._request)
        if key.id is None or not await response_store.delete(response_id, key.id):
            return _response_not_found(response_id)
        return HttpResponse(
            orjson.dumps({"id": response_id, "object": "response.deleted", "deleted": True}),
            content_type="application/json",
        )


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
