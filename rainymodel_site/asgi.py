"""The ASGI entry point: Django wrapped in a tiny pure-ASGI layer that owns the process lifecycle.

Lifespan startup loads the config snapshot (and starts its refresher), the request-log writer, the alert
dispatcher and the metrics' fold timer, and sets up traces and JSON log lines when configured
(rainymodel_site/tracing.py, log_lines.py); shutdown (gunicorn/uvicorn on SIGTERM) flushes every buffered log row
and queued alert, closes the pooled upstream client, folds the last calls into the metrics (rainymodel_site/
metrics.py, which also folds every second from the loop) and exports the spans still queued. Static files for the
admin and usage pages are served here too, so a single process needs nothing in front of it.

The API (`/v1/`) is served by `ApiHandler`: the same Django URLs and views, without the browser-facing middleware
(sessions, CSRF, messages, ...) and without the request_started/finished signals. Under ASGI each of those is a
hop into Django's single thread for sync code (Django's MiddlewareMixin runs every process_request/_response
through `sync_to_async(thread_sensitive=True)`), which serialises the whole worker behind one thread; the API
path is API-key authenticated and makes no database query, so it needs none of them.

`ApiHandler` is also the API's edge against hostile clients: before a single byte of the body is read it refuses
a disallowed Host (400), a missing or wrong key (401; 429 past the per-IP failed-authentication limit, on every
endpoint) and a `Content-Length` over RAINYMODEL_MAX_BODY_BYTES (413); it then reads the body under that limit
(a chunked body stops being read the moment it passes it: 413) and within RAINYMODEL_BODY_TIMEOUT_S (408).
Each refusal of a chat-completions call keeps its one RequestLog row. Limits that apply before a request exists
(header size, header read time, connections) are the HTTP server's: rainymodel_site/http_protocol.py.
Nothing else belongs in this module.
"""

import asyncio
import io
import logging
import os
import tempfile
from contextlib import closing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")

from asgiref.sync import sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.exceptions import DisallowedHost, RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import resolve, set_script_prefix  # noqa: E402

from rainymodel_site import error_codes as codes  # noqa: E402
from rainymodel_site import log_lines, tracing  # noqa: E402
from rainymodel_site.api_errors import ApiError  # noqa: E402
from rainymodel_site.request_ids import RequestIdMiddleware  # noqa: E402
from rainymodel_site.threads import run_blocking  # noqa: E402

log = logging.getLogger("rainymodel")


class ApiHandler(ASGIHandler):
    """Django's ASGI handler for /v1/: one async middleware (request ids), no signals, the edge's checks.

    `handle`, and the ASGIHandler internals it calls, follow Django 6.1.3; tests/test_framework_pins.py fails when
    the installed Django changes any of them (read the upstream diff, then carry it over).

    The `response.on_close` contract, the one place it is written down: a response may carry `on_close`, an async
    callable taking no arguments. `handle` awaits it exactly once after the response is over, however it ended:
    sent in full, the client gone mid-stream, or the client gone before a streamed body's first byte (then the
    body's generator never starts, so nothing inside it can run). It must be idempotent with whatever the body
    itself does on its way out (the chat-completions flow finishes its call in both places; `Call.finish` runs
    once), must not raise, and must not send anything.
    """

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=is_async)
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        # django-stubs does not declare BaseHandler's private `_get_response_async`; Django 6.1 has it.
        view_chain = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        self._middleware_chain = convert_exception_to_response(RequestIdMiddleware(view_chain))

    async def handle(self, scope, receive, send):
        """ASGIHandler.handle without request_started/request_finished (database connection bookkeeping), with
        the edge's checks before the body is read (see the module docstring)."""
        set_script_prefix(get_script_prefix(scope))
        # The request is made from the head alone, so the checks below can run before the body is read; the body
        # becomes its stream once read (ASGIRequest reads the body from exactly that attribute).
        request, error_response = self.create_request(scope, io.BytesIO())
        if request is None:
            await self.send_response(error_response, send)
            return
        refusal = await refuse_before_body(request)
        if refusal is not None:
            await self.send_refusal(request, refusal, send)
            return
        try:
            body_file = await self.read_body(receive)
        except BodyRefused as refused:
            await self.send_refusal(request, refused.error, send)
            return
        except RequestAborted:
            await log_disconnect(request)
            return
        request._stream = body_file
        with closing(body_file):
            response = None
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self.listen_for_disconnect(receive))
                        response = await self.run_get_response(request)
                        await self.send_response(response, send)
                        raise RequestProcessed
                except* (RequestProcessed, RequestAborted):
                    pass
            except BaseExceptionGroup as exception_group:
                if len(exception_group.exceptions) == 1:
                    raise exception_group.exceptions[0]  # noqa: B904 -- as in Django's ASGIHandler.handle
                raise
            finally:
                # The `on_close` contract: see the class docstring.
                on_close = getattr(response, "on_close", None)
                if on_close is not None:
                    await on_close()

    async def read_body(self, receive):
        """Django's read_body (spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE), refusing a body that passes
        RAINYMODEL_MAX_BODY_BYTES as soon as it does (413) or that is not complete within
        RAINYMODEL_BODY_TIMEOUT_S (408). Raises BodyRefused, or RequestAborted when the client goes away."""
        limit = settings.RAINYMODEL_MAX_BODY_BYTES
        deadline = asyncio.get_running_loop().time() + settings.RAINYMODEL_BODY_TIMEOUT_S
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        size = 0
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyRefused(
                        ApiError(
                            408,
                            codes.REQUEST_TIMEOUT,
                            f"The request body did not arrive within {settings.RAINYMODEL_BODY_TIMEOUT_S:g} s.",
                        )
                    ) from None
                if message["type"] == "http.disconnect":
                    raise RequestAborted()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(too_large())
                if chunk:
                    if getattr(body_file, "_rolled", False):
                        await sync_to_async(body_file.write, thread_sensitive=False)(chunk)
                    else:
                        body_file.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        return body_file

    async def send_refusal(self, request, error, send):
        """Answer a request refused at the edge (logged like any rejected call) and, when its body was not read,
        close the connection rather than read what the client is still sending."""
        response = await flow.reject_early(request, error.status, error.code, error.message)
        for name, value in error.headers.items():
            response[name] = value
        if announces_body(request):
            response["Connection"] = "close"
        await self.send_response(response, send)

    async def send_response(self, response, send):
        """Django's send_response, plus Content-Length on every non-streamed answer: HTTP/1.0 clients cannot read
        chunked bodies, and uvicorn chunks any answer that does not say its length."""
        if not response.streaming and not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        await super().send_response(response, send)


class RequestProcessed(Exception):
    """`handle`'s signal that the response went out. Django's handle defines this class inside the method, which
    builds a new class on every request (~25 µs of CPU, bench/request_objects.py); one class does the same job."""


class BodyRefused(Exception):
    """The body broke a limit while it was being read; `error` is the answer."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


async def refuse_before_body(request):
    """The error (an ApiError) for a request that must not have its body read, else None. In order: a Host outside
    ALLOWED_HOSTS; a missing or wrong key (with the per-IP limit on failed authentication); a Content-Length over
    RAINYMODEL_MAX_BODY_BYTES.

    The key is checked for every request that carries a body, and for every other request to an endpoint and
    method that exists: a bodiless request to an unknown URL or with a method the view does not serve still gets
    the view's own 404/405, as before this check existed."""
    try:
        request.get_host()
    except DisallowedHost:
        return ApiError(400, codes.INVALID_HOST, "The Host header is not allowed here.")
    if announces_body(request) or _serves(request):
        try:
            await require_key(request)  # the views' own door; a brand-new key works at once
        except ApiError as refused:
            return refused
    if announced_length(request) > settings.RAINYMODEL_MAX_BODY_BYTES:
        return too_large()
    return None


def announced_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def announces_body(request) -> bool:
    return announced_length(request) > 0 or "transfer-encoding" in request.headers


def too_large():
    return ApiError(
        413, codes.REQUEST_TOO_LARGE, f"The request body is larger than {settings.RAINYMODEL_MAX_BODY_BYTES} bytes."
    )


def _serves(request) -> bool:
    """Whether the request names an endpoint and a method it serves (function views: any method)."""
    view = resolve(request.path_info).func
    if view is unknown_endpoint:
        return False
    view_class = getattr(view, "view_class", None)
    return view_class is None or hasattr(view_class, request.method.lower())


async def log_disconnect(request):
    """A client gone while sending its body: a chat-completions call still gets its row (499)."""
    await flow.reject_early(request, 499, codes.CLIENT_DISCONNECTED, "The client closed the connection.")


django_application = get_asgi_application()

# The apps' modules import their models, so they can only be imported once get_asgi_application() has run
# django.setup(); the functions above use them at call time.
from alerts.dispatch import dispatcher as alert_dispatcher  # noqa: E402
from apikeys.auth import require_key  # noqa: E402
from rainymodel_site import metrics  # noqa: E402
from routing import snapshot  # noqa: E402
from routing.proxy import flow, upstream  # noqa: E402
from routing.proxy.api import unknown_endpoint  # noqa: E402
from usage import writer  # noqa: E402

api_application = ApiHandler()
static_application = ASGIStaticFilesHandler(django_application)


async def startup():
    await run_blocking(snapshot.ensure_loaded)
    writer.start()
    alert_dispatcher.start()
    tracing.start()  # per worker, after gunicorn's fork: on only with OTEL_EXPORTER_OTLP_ENDPOINT
    log_lines.start()
    metrics.start_folding()


async def shutdown():
    await run_blocking(snapshot.stop_refresher)
    await run_blocking(writer.stop)
    await run_blocking(alert_dispatcher.stop)
    await upstream.close_client()
    metrics.stop_folding()  # the last calls' metrics, before the worker exits
    await asyncio.to_thread(tracing.stop)  # exports the spans still queued
    await asyncio.to_thread(log_lines.stop)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await shutdown()
            finally:
                await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith("/v1/"):
        await api_application(scope, receive, send)
    elif scope["type"] == "http" and scope["path"].startswith("/" + settings.STATIC_URL.lstrip("/")):
        await static_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
