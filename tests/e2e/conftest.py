"""An in-process RainyModel for end-to-end tests of the request path: the real ASGI application served by uvicorn
on a loopback port in a background thread, so tests drive it with real sockets (httpx, the openai SDK) while
still reaching its snapshot and log writer directly. Tests that need separate processes use `rainymodel_server`.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest


class InProcessProxy:
    def __init__(self):
        import uvicorn

        from rainymodel_site.asgi import application

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning", loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process RainyModel did not start")
            time.sleep(0.01)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)

    def reload(self):
        """Make the snapshot see what the test just committed (servers poll; tests need not wait)."""
        from routing import snapshot

        snapshot.refresh()

    def openai(self, key, **kwargs):
        import openai

        self.reload()
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kwargs)

    def async_openai(self, key, **kwargs):
        import openai

        self.reload()
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kwargs)

    def post(self, key, json=None, headers=None, **kwargs):
        self.reload()
        h = {"Authorization": f"Bearer {key}"} if key else {}
        h.update(headers or {})
        return httpx.post(self.url + "/v1/chat/completions", json=json, headers=h, timeout=30, **kwargs)

    def logs(self, expected: int | None = None, timeout: float = 5.0):
        """RequestLog rows, oldest first, after the writer has flushed (waits for `expected` rows)."""
        from usage import writer
        from usage.models import RequestLog

        deadline = time.monotonic() + timeout
        while True:
            writer.flush()
            rows = list(RequestLog.objects.order_by("created_at"))
            if expected is None or len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


@pytest.fixture
def second_upstream():
    from tests.fakes.upstream import FakeUpstream

    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def third_upstream():
    from tests.fakes.upstream import FakeUpstream

    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def proxy(transactional_db):
    p = InProcessProxy().start()
    yield p
    p.stop()


def chat(model="rainymodel/auto", content="hello there", **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
