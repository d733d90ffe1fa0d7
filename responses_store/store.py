"""Reads and writes of stored responses. The sync functions touch the database; the request path calls them only
through `rainymodel_site.threads.run_blocking` (the async wrappers below), never on the event loop.

A response is written after its answer went out (non-streamed: as the body is returned; streamed: at the end of the
stream), by a task. `wait_pending(id)` lets a request of the same process that continues it at once wait for that
write instead of answering 404; across processes the write is a few milliseconds behind the answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from rainymodel_site.threads import run_blocking
from responses_store.models import StoredResponse

log = logging.getLogger(__name__)
_pending: dict[str, asyncio.Task] = {}


def save_sync(response_id: str, key_id: int, response: dict, items: list[dict]) -> None:
    now = timezone.now()
    StoredResponse.objects.update_or_create(
        id=response_id,
        defaults={
            "api_key_id": key_id,
            "created_at": now,
            "response": response,
            "items": items,
            "expires_at": now + timedelta(seconds=settings.RAINYMODEL_RESPONSES_TTL_S),
        },
    )


def load_sync(response_id: str, key_id: int) -> StoredResponse | None:
    """The stored response `response_id` of key `key_id`, None when unknown, expired or another key's."""
    return StoredResponse.objects.filter(id=response_id, api_key_id=key_id, expires_at__gt=timezone.now()).first()


def delete_sync(response_id: str, key_id: int) -> bool:
    deleted, _ = StoredResponse.objects.filter(
        id=response_id, api_key_id=key_id, expires_at__gt=timezone.now()
    ).delete()
    return bool(deleted)


def prune_sync() -> int:
    deleted, _ = StoredResponse.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


def save_later(response_id: str, key_id: int, response: dict, items: list[dict]) -> None:
    """Write the response off the loop, in a task the caller does not wait for (the answer is already out)."""

    async def save():
        try:
            await run_blocking(save_sync, response_id, key_id, response, items)
        except Exception:
            log.exception("could not store response %s", response_id)
        finally:
            _pending.pop(response_id, None)

    _pending[response_id] = asyncio.get_running_loop().create_task(save())


async def wait_pending(response_id: str) -> None:
    task = _pending.get(response_id)
    if task is not None:
        await asyncio.shield(task)


async def load(response_id: str, key_id: int) -> StoredResponse | None:
    await wait_pending(response_id)
    return await run_blocking(load_sync, response_id, key_id)


async def delete(response_id: str, key_id: int) -> bool:
    await wait_pending(response_id)
    return await run_blocking(delete_sync, response_id, key_id)
