"""Tests here call the upstream layer in-process, each on its own event loop (pytest-asyncio): the loop's pooled
upstream connections are closed at the end of each test, as the lifespan shutdown closes them in a server."""

import pytest_asyncio

from routing.proxy import upstream


@pytest_asyncio.fixture(autouse=True)
async def close_upstream_pool():
    yield
    await upstream.close_client()
