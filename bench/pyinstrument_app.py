"""RainyModel's ASGI application with pyinstrument around each `/v1/` request, for `make profile` only (never in
production: nothing imports this module but the benchmark's server command).

Each API request is profiled (async mode: time spent awaiting the upstream shows as `[await]` under the line that
awaited); the sessions add up until `GET /__bench/pyinstrument?name=NAME` writes them to
`$RAINYMODEL_BENCH_PYINSTRUMENT_DIR/NAME.html` and `NAME.txt` and starts afresh (without `name`: starts afresh
without writing). Meant for one client at a time.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from pyinstrument import Profiler

from rainymodel_site.asgi import application as rainymodel

OUT = Path(os.environ.get("RAINYMODEL_BENCH_PYINSTRUMENT_DIR", "."))
# 0.1 ms: a request takes about 1 ms of CPU, so the default 1 ms interval would see one frame per request.
_profiler = Profiler(
    interval=float(os.environ.get("RAINYMODEL_BENCH_PYINSTRUMENT_INTERVAL", "0.0001")), async_mode="enabled"
)

_one_at_a_time = asyncio.Lock()


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/__bench/pyinstrument":
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", scope["query_string"].decode().partition("name=")[2])
        session = _profiler.last_session
        if not name:  # no name: forget what was profiled so far (the warmup)
            _profiler.reset()
            status, body = 200, b"reset\n"
        elif session is None:
            status, body = 404, b"nothing profiled yet\n"
        else:
            (OUT / f"{name}.html").write_text(_profiler.output_html())
            (OUT / f"{name}.txt").write_text(_profiler.output_text(unicode=True, color=False, show_all=False))
            _profiler.reset()
            status, body = 200, f"{OUT / name}.html\n".encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http" and scope["path"].startswith("/v1/"):
        # One request at a time: a kept-alive client's next request can arrive while this one's application call
        # is still finishing (after its last body byte), and one profiler cannot run twice.
        async with _one_at_a_time:
            _profiler.start()
            try:
                await rainymodel(scope, receive, send)
            finally:
                _profiler.stop()
        return
    await rainymodel(scope, receive, send)
