"""The ASGI entry point: Django wrapped in a tiny pure-ASGI layer that owns the process lifecycle.

Lifespan startup loads the config snapshot (and starts its refresher) and the request-log writer; shutdown
(gunicorn/uvicorn on SIGTERM) flushes every buffered log row and closes the pooled upstream client. Static files
for the admin and usage pages are served here too, so a single process needs nothing in front of it.
Nothing else belongs in this module.
"""

import asyncio
import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainymodel_site.settings")

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()
static_application = ASGIStaticFilesHandler(django_application)
log = logging.getLogger("rainymodel")


async def startup():
    from routing import snapshot
    from usage import writer

    await asyncio.to_thread(snapshot.ensure_loaded)
    writer.start()


async def shutdown():
    from routing.proxy import upstream
    from usage import writer

    await asyncio.to_thread(writer.stop)
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
    elif scope["type"] == "http" and scope["path"].startswith("/" + settings.STATIC_URL.lstrip("/")):
        await static_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
