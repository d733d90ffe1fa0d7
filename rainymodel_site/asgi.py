"""The ASGI entry point: Django wrapped in a tiny pure-ASGI layer that owns the process lifecycle.

Lifespan startup loads the config snapshot (and starts its refresher) and the request-log writer; shutdown
(gunicorn/uvicorn on SIGTERM) flushes every buffered log row and closes the pooled upstream client. Static files
for the admin and usage pages are served here too, so a single process needs nothing in front of it.

The API (`/v1/`) is served by `ApiHandler`: the same Django URLs and views, without the browser-facing middleware
(sessions, CSRF, messages, ...) and without the request_started/finished signals. Under ASGI each of those is a
hop into Django's single thread for sync code (Django's MiddlewareMixin runs every process_request/_response
through `sync_to_async(thread_sensitive=True)`), which serialises the whole worker behind one thread; the API
path is API-key authenticated and makes no database query, so it needs none of them.
Nothing else belongs in this module.
"""

import asyncio
import logging
import os
from contextlib import closing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from rainymodel_site.threads import run_blocking  # noqa: E402

log = logging.getLogger("rainymodel")


class ApiHandler(ASGIHandler):
    """Django's ASGI handler for /v1/: one async middleware (request ids, Host check), no signals."""

    def load_middleware(self, is_async=False):
        from routing.proxy.middleware import RequestIdMiddleware

        super().load_middleware(is_async=is_async)
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        view_chain = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(RequestIdMiddleware(view_chain))

    async def handle(self, scope, receive, send):
        """ASGIHandler.handle without request_started/request_finished (database connection bookkeeping)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                return

            class RequestProcessed(Exception):
                pass

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
                    raise exception_group.exceptions[0]
                raise
            finally:
                # A client gone before a stream's first byte was sent leaves its body generator unstarted, so
                # nothing in it runs; the response's own hook still finishes the call (logged once either way).
                on_close = getattr(response, "on_close", None)
                if on_close is not None:
                    await on_close()


django_application = get_asgi_application()
api_application = ApiHandler()
static_application = ASGIStaticFilesHandler(django_application)


async def startup():
    from routing import snapshot
    from usage import writer

    await run_blocking(snapshot.ensure_loaded)
    writer.start()


async def shutdown():
    from routing import snapshot
    from routing.proxy import upstream
    from usage import writer

    await run_blocking(snapshot.stop_refresher)
    await run_blocking(writer.stop)
    await upstream.close_client()


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
