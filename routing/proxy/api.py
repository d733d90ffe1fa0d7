"""Thin adrf views (placeholder)."""
from adrf.views import APIView


class ChatCompletionsView(APIView):
    pass


class ModelsView(APIView):
    pass


def unknown_endpoint(request):
    from routing.proxy.errors import not_found_handler
    return not_found_handler(request)
