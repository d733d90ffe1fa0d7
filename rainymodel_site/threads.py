"""Blocking database work off the event loop.

`run_blocking(fn, *args)` runs `fn` in a worker thread and then closes that thread's database connections, which
on PostgreSQL gives them back to Django's connection pool. Executor threads live on after the call; without the
close, each would keep a pooled connection for good and a handful of them exhausts the pool.
"""

import asyncio

from django.db import connections


def _closing(fn, *args):
    try:
        return fn(*args)
    finally:
        connections.close_all()


async def run_blocking(fn, *args):
    return await asyncio.to_thread(_closing, fn, *args)
