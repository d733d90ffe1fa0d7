"""Thin adrf views: parse nothing, call one function, return its response. The request path lives in flow.py."""


import orjson
from adrf.views import APIView
from django.http import HttpResponse

from apikeys.auth import KeyRejected, authenticate
from routing import snapshot
from routing.proxy import flow
from routing.proxy.errors import error_response, not_found_handler


class ChatCompletionsView(APIView):
    """POST /v1/chat/completions (SPEC §5)."""

    async def post(self, request):
        return await flow.chat_completions(request._request)


class ModelsView(APIView):
    """GET /v1/models: the listed, enabled aliases this key may use."""

    async def get(self, request):
        snap = snapshot.current()
        try:
            key = authenticate(snap, request._request.headers)
        except KeyRejected as rejected:
            return error_response(401, rejected.code, rejected.message)
        data = [
            {"id": alias.name, "object": "model", "created": alias.created, "owned_by": "rainymodel",
             "description": alias.description}
            for alias in snap.aliases.values()
            if alias.enabled and alias.listed and (not key.allowed_aliases or alias.name in key.allowed_aliases)
        ]
        return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")


def unknown_endpoint(request, *args, **kwargs):
    return not_found_handler(request)
