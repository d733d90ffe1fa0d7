"""What Django and DRF/adrf cost per /v1/ request, piece by piece, over the real objects (issue 16; run by hand).

    .venv/bin/python bench/request_objects.py [--number 20000] [--repeat 7]

Each piece of a `POST /v1/chat/completions` that is not routing is timed alone in this process (thread CPU time,
best of `--repeat` runs of `--number` calls, in µs per call), on a request built from the same head the load
benchmark sends: the ASGIRequest built from the ASGI scope, the Host check, URL resolution, the adrf view's whole
dispatch around a handler that returns at once (view instance, DRF Request, `initial()`: content negotiation,
versioning, authentication, permissions, throttles; `finalize_response`), its content negotiation alone, building
the HttpResponse with RainyModel's headers, a class statement (what Django's ASGIHandler.handle runs per
request, and ApiHandler.handle no longer does), and sending it through `ApiHandler.send_response` to a no-op ASGI send.
Changed pieces are measured beside their previous form in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HEAD = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", b"96"),
    (b"user-agent", b"rainymodel-bench"),
    (b"authorization", b"Bearer rm-0123456789abcdef0123456789abcdef0123456789"),
]
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "root_path": "",
    "headers": HEAD,
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
ANSWER_HEADERS = {
    "x-request-id": "req_0123456789abcdef0123456789abcdef",
    "x-rainymodel-route": "free",
    "x-rainymodel-upstream": "openai",
    "x-rainymodel-attempts": "1",
    "x-rainymodel-latency-ms": "1",
    "x-rainymodel-provider": "fake",
    "x-rainymodel-model": "fake-model",
    "x-rainymodel-alias": "rainymodel/auto",
    "x-rainymodel-policy": "auto",
    "x-ratelimit-limit-requests": "100000000",
    "x-ratelimit-remaining-requests": "99999999",
}
BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant"}}]}' * 4


def best_us(fn, number: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, time.thread_time() - began)
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("SECRET_KEY", "bench-request-objects")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")
    from adrf.views import APIView as AdrfView
    from django.http import HttpResponse
    from django.urls import resolve

    from rainymodel_site.asgi import api_application
    from routing.proxy import api

    loop = asyncio.new_event_loop()

    def request():
        return api_application.create_request(dict(SCOPE), io.BytesIO())[0]

    async def instant(self, request):
        return HttpResponse(b"{}", content_type="application/json")

    def view_of(base):
        view_class = type("BenchView", (base,), {"post": instant})
        return view_class.as_view()

    class Before(api.ApiView):  # the view as it was before issue 16 (DRF's default negotiation, per-call headers)
        content_negotiation_class = AdrfView.content_negotiation_class
        default_response_headers = AdrfView.default_response_headers
        perform_authentication = AdrfView.perform_authentication

    views = {"before": view_of(Before), "now": view_of(api.ApiView)}
    one = request()

    def dispatch(view):
        return lambda: loop.run_until_complete(view(request()))

    def negotiate(view_class):
        instance = view_class()
        instance.format_kwarg = None
        drf_request = instance.initialize_request(one)
        return lambda: instance.perform_content_negotiation(drf_request)

    def response():
        answer = HttpResponse(BODY, content_type="application/json")
        for name, value in ANSWER_HEADERS.items():
            answer[name] = value
        return answer

    async def nothing(message):
        pass

    def new_class():
        class RequestProcessed(Exception):
            pass

    built = response()
    pieces = [
        ("ASGIRequest from the scope (create_request)", request),
        ("Host check (get_host)", lambda: one.get_host()),
        ("URL resolution (resolve)", lambda: resolve("/v1/chat/completions")),
        ("an empty event-loop round (run_until_complete of a no-op; subtract from dispatch)", None),
        *[(f"adrf view dispatch around an instant handler, incl. new ASGIRequest: {n}", v) for n, v in views.items()],
        ("DRF content negotiation alone: before", negotiate(Before)),
        ("DRF content negotiation alone: now", negotiate(api.ApiView)),
        ("a class statement (Django's handle built its RequestProcessed exception class per request)", new_class),
        ("HttpResponse with RainyModel's headers", response),
        ("ApiHandler.send_response (headers encoded, body sent)", lambda: loop.run_until_complete(send(built))),
    ]

    async def noop():
        pass

    async def send(answer):
        await api_application.send_response(answer, nothing)

    print(f"µs per call, thread CPU, best of {args.repeat} x {args.number}")
    print("| piece | µs |")
    print("|---|---:|")
    for name, fn in pieces:
        if fn is None:
            fn = lambda: loop.run_until_complete(noop())  # noqa: E731
        elif name.startswith("adrf view dispatch"):
            fn = dispatch(fn)
        print(f"| {name} | {best_us(fn, args.number, args.repeat):.1f} |")


if __name__ == "__main__":
    main()
