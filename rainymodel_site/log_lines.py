"""One JSON log line per /v1/ call (docs/observability.md, "JSON log lines"), when RAINYMODEL_LOG_REQUESTS=json.

Each line is a JSON object on the `rainymodel.requests` logger, written to stderr: who called (key id and name, the
key's prefix), what was asked (endpoint, requested model, alias, policy), what answered (route, provider, upstream
model, tier), how (status, error code, latency, time to first token, every attempt's provider, outcome and status,
the fallback reason), what it cost (tokens, cost) and, when tracing is on, the trace and span ids. Never the prompt,
the answer, a key or its hash: the line is built only from the call's RequestLog row and the call's own names.

`Call.finish` calls `emit` once per call, after the row is queued. The event loop only formats the line and puts it
on a bounded in-memory queue (the standard library's QueueHandler); a QueueListener thread writes it, so a slow or
blocked stderr never stalls a request. Should the queue ever fill (stderr blocked for 10 000 lines), lines are
dropped and counted rather than waited for. `start` and `stop` run at ASGI lifespan startup and shutdown (per
worker; `stop` writes what is queued). `enabled` is the one check the request path makes.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from rainymodel_site import tracing

if TYPE_CHECKING:
    from routing.proxy.call import Call

LOGGER_NAME = "rainymodel.requests"
MODES = ("off", "json")
QUEUE_SIZE = 10_000

enabled = False  # the request path's one check; True only between start() and stop() when the setting says json
logger = logging.getLogger(LOGGER_NAME)
_listener: logging.handlers.QueueListener | None = None
_handler: DroppingQueueHandler | None = None


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that never waits: past `limit` queued lines, a line is dropped and counted.

    The queue is a `queue.SimpleQueue` (C, no Python-level condition variable): measured here, a line costs about
    9 µs of CPU through it against 35 µs through a bounded `queue.Queue`, whose put and get wake each other through
    Python locks. Hence the bound is checked here rather than by the queue."""

    def __init__(self, q: queue.SimpleQueue, limit: int = QUEUE_SIZE):
        super().__init__(q)
        self.simple_queue = q  # the same queue, typed: QueueHandler's stubs only know put_nowait
        self.limit = limit
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.simple_queue.qsize() >= self.limit:
            self.dropped += 1
            return
        self.simple_queue.put_nowait(record)


def start(stream=None) -> bool:
    """Start writing lines (lifespan startup) when RAINYMODEL_LOG_REQUESTS is "json"; `stream` defaults to stderr.
    Returns whether it is on."""
    global enabled, _listener, _handler
    mode = settings.RAINYMODEL_LOG_REQUESTS
    if mode not in MODES:
        raise ImproperlyConfigured(f"RAINYMODEL_LOG_REQUESTS must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "json" or _listener is not None:
        return _listener is not None
    q: queue.SimpleQueue = queue.SimpleQueue()
    target = logging.StreamHandler(stream or sys.stderr)
    target.setFormatter(logging.Formatter("%(message)s"))
    _handler = DroppingQueueHandler(q)
    _listener = logging.handlers.QueueListener(q, target)
    _listener.start()
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the line is the whole message: not again through the root logger's format
    enabled = True
    return True


def stop() -> None:
    """Write what is queued and stop (lifespan shutdown)."""
    global enabled, _listener, _handler
    enabled = False
    listener, handler, _listener, _handler = _listener, _handler, None, None
    if handler is not None:
        logger.removeHandler(handler)
    if listener is not None:
        listener.stop()
    if handler is not None and handler.dropped:
        logging.getLogger(__name__).warning("%d JSON log lines were dropped (stderr was blocked)", handler.dropped)


def line(call: Call, row: dict) -> dict:
    """The log line of a finished call, from its RequestLog `row` (call.py) and the call's own names."""
    key = call.key
    route = call.route
    entry = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": call.request_id,  # not row["id"]: the writer's thread may suffix a reused one meanwhile
        "endpoint": row["endpoint"],
        "key_id": row["api_key_id"],
        "key_name": key.name if key is not None else "",
        "key_prefix": row["key_prefix"],
        "requested_model": row["requested_model"],
        "alias": row["alias"],
        "policy": row["policy"],
        "route": route.label if route is not None else "",
        "provider": row["provider"],
        "upstream_model": row["upstream_model"],
        "tier": row["tier"],
        "status": row["status"],
        "error_code": row["error_code"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row["ttft_ms"],
        "attempts": len(row["attempts"]),
        "tried": row["attempts"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "usage_estimated": row["usage_estimated"],
        "cost_usd": row["cost_usd"],
        "stream": row["stream"],
        "fallback_reason": call.fallback_reason if call.attempts else None,
        "client_ip": row["client_ip"],
    }
    ids = tracing.ids(call)
    if ids is not None:
        entry["trace_id"], entry["span_id"] = ids
    return entry


def emit(call: Call, row: dict) -> None:
    """Log the call's line (`Call.finish`, once per call). A fault here never fails the call (its row is queued)."""
    try:
        logger.info(orjson.dumps(line(call, row)).decode())
    except Exception:
        logging.getLogger(__name__).exception("could not write the JSON log line of %s", call.request_id)
