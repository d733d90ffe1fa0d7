"""Talking to upstream providers: the one pooled httpx transport per process (per event loop) and one attempt
with its timeouts.

Timeouts per provider: `connect_timeout_s` to open the connection, `first_token_timeout_s` until a stream's first
event, `idle_timeout_s` between stream events, `request_timeout_s` for the whole attempt; all capped by the
request's overall deadline. Failures come out as `AttemptFailed` carrying a `Decision` from outcomes.py; a stream
that breaks after its first event raises `StreamBroken`.
The client's own credentials are never forwarded: only the provider's secret and `extra_headers`.

The httpx API (Request, Response, its exceptions) runs over aiohttp's connection pool (httpx-aiohttp's transport):
at 32 concurrent requests httpcore's pool cost 3x the CPU per request of aiohttp's, and aiohttp hands a stream's
bytes over as they were read rather than one HTTP chunk (one SSE event) at a time (docs/benchmarks.md, "Levers").
`RAINYMODEL_UPSTREAM_TRANSPORT=httpcore` selects httpx's own transport instead (the A side of that measurement).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream

from routing.proxy import outcomes
from routing.proxy.outcomes import Decision
from routing.proxy.sse import SSEParser
from routing.snapshot import RouteInfo

MAX_ERROR_BODY = 64 * 1024

_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


MAX_CONNECTIONS = 1000  # open upstream connections per worker, all providers together
KEEPALIVE_S = 30  # an idle pooled connection is closed after this long
MAX_HEADER_BYTES = 64 * 1024  # one upstream response header line (httpx/h11 allowed as much; aiohttp's default is 8 KB)


def pool() -> httpx.AsyncBaseTransport:
    """This event loop's pooled connection transport (one per process in production: one loop per worker).

    A transport used without httpx's AsyncClient layer on top: that layer (cookies, auth flows, redirects, event
    hooks, header merging) is nothing this proxy uses, and skipping it saves 0.3-0.4 ms of CPU per upstream
    request (measured, see docs/benchmarks.md). Requests carry their timeouts in their extensions.
    """
    loop = asyncio.get_running_loop()
    transport = _pools.get(loop)
    if transport is None:
        if os.environ.get("RAINYMODEL_UPSTREAM_TRANSPORT", "").strip().lower() == "httpcore":
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_S
                ),
                trust_env=False,
            )
        else:
            transport = _AiohttpTransport(client=_aiohttp_session())
        _pools[loop] = transport
    return transport


class _AiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, with the response body read by `_Body`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, AiohttpResponseStream)
        response.stream = _Body(response.stream._aiohttp_response)
        return response


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as it arrives: each read hands over everything received so far (a burst of SSE
    events in one piece), and when the connection breaks, the bytes received before the break come out before
    the error. (aiohttp's reader raises a stored error first and drops what it had buffered: a stream cut after
    three events would lose them, and a relay would count an answer that had begun as one that never started.)
    The drain uses aiohttp's `StreamReader._read_nowait`, pinned with aiohttp in requirements.txt and covered by
    tests/routing/proxy/test_upstream.py."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            try:
                chunk = await content.readany()
            except aiohttp.ClientError:
                rest = content._read_nowait(-1)
                if rest:
                    yield rest
                raise
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        await self._response.__aexit__(None, None, None)


def _aiohttp_session() -> aiohttp.ClientSession:
    """aiohttp's pool with nothing a proxy must not do: no cookie jar (an upstream's cookie would reach other
    keys' requests), no Accept-Encoding or User-Agent of its own (a compressed answer would be relayed as
    compressed bytes: bodies are passed through undecoded), no proxy from the environment."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        auto_decompress=False,
        trust_env=False,
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
    )


async def close_client() -> None:
    loop = asyncio.get_running_loop()
    transport = _pools.pop(loop, None)
    if transport is not None:
        await transport.aclose()


CHAT_PATH = "/chat/completions"


async def _send(route: RouteInfo, payload: bytes, budget: float, path: str = CHAT_PATH) -> httpx.Response:
    """POST the payload to the route's URL for `path` (the operation's upstream path, under the provider's base
    URL); the response body is not read yet."""
    request = httpx.Request(
        "POST",
        route.provider.base_url + path,
        content=payload,
        headers=_headers(route),
        extensions={"timeout": _timeout(route, budget).as_dict()},
    )
    return await pool().handle_async_request(request)


class AttemptFailed(Exception):
    """One attempt on one route did not produce an answer."""

    def __init__(self, decision: Decision, *, status: int | None = None, body: bytes = b"", detail: str = ""):
        super().__init__(decision.reason)
        self.decision = decision
        self.status = status
        self.body = body
        self.detail = detail


class StreamBroken(Exception):
    """A stream stopped (timeout, reset) after at least one event had been received."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _headers(route: RouteInfo) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    for name, value in route.provider.extra_headers:
        headers[name] = value
    if route.provider.api_key:
        headers["authorization"] = f"Bearer {route.provider.api_key}"
    return headers


def _timeout(route: RouteInfo, remaining: float) -> httpx.Timeout:
    connect = max(0.001, min(route.provider.connect_timeout_s, remaining))
    return httpx.Timeout(connect=connect, read=None, write=connect, pool=connect)


def _attempt_budget(route: RouteInfo, deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AttemptFailed(outcomes.classify_transport(outcomes.TIMEOUT), detail="deadline reached")
    return min(route.provider.request_timeout_s, remaining)


async def _failure_from_response(response: httpx.Response) -> AttemptFailed:
    body = b""
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_ERROR_BODY:
                break
    except TRANSPORT_ERRORS:
        pass
    finally:
        await response.aclose()
    parsed = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        pass
    retry_after = outcomes.parse_retry_after(response.headers.get("retry-after"))
    code = outcomes.CONTEXT_LENGTH_EXCEEDED if outcomes.looks_like_context_error(parsed) else None
    if code is None and isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        code = parsed["error"].get("code")
    decision = outcomes.classify_status(response.status_code, code, retry_after)
    return AttemptFailed(decision, status=response.status_code, body=body)


# What a transport failure may raise: httpx's errors (httpx-aiohttp maps most of aiohttp's onto them), aiohttp's
# own that it leaves unmapped (an unreadable status line or header), a timeout, a socket error.
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError)


def _transport_failure(exc: BaseException) -> AttemptFailed:
    """Classify by the original error: httpx-aiohttp maps every aiohttp connection error (a reset, a server gone
    before answering) onto httpx.ConnectTimeout, which would read as a timeout."""
    cause = (
        exc.__cause__ if isinstance(exc, httpx.HTTPError) and isinstance(exc.__cause__, aiohttp.ClientError) else exc
    )
    if isinstance(cause, aiohttp.ClientConnectorError) or isinstance(cause, httpx.ConnectError):
        kind = outcomes.CONNECT_ERROR
    elif isinstance(cause, (TimeoutError, httpx.TimeoutException)):  # aiohttp's timeouts are TimeoutErrors
        kind = outcomes.TIMEOUT
    else:
        kind = outcomes.RESET
    return AttemptFailed(outcomes.classify_transport(kind), detail=type(cause).__name__)


def is_chat_completion(data: dict) -> str | None:
    """None when `data` is a usable chat completion, else what is wrong with it (the chat operation's check)."""
    if not isinstance(data.get("choices"), list) or not data["choices"]:
        return "body is not a chat completion"
    return None


async def complete(
    route: RouteInfo, payload: bytes, deadline: float, path: str = CHAT_PATH, check=is_chat_completion
) -> tuple[bytes, dict]:
    """A non-streaming attempt: the upstream's body and its parsed JSON, or AttemptFailed. `check(data)` returns
    None for a usable answer, else a detail (the attempt fails as `invalid_response` and the loop moves on)."""
    budget = _attempt_budget(route, deadline)
    try:
        async with asyncio.timeout(budget):
            response = await _send(route, payload, budget, path)
            if response.status_code >= 300:
                raise await _failure_from_response(response)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
    except AttemptFailed:
        raise
    except TRANSPORT_ERRORS as exc:
        raise _transport_failure(exc) from exc
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AttemptFailed(
            outcomes.classify_transport(outcomes.INVALID_RESPONSE), status=200, detail="body is not JSON"
        ) from None
    problem = check(data) if isinstance(data, dict) else "body is not a JSON object"
    if problem:
        raise AttemptFailed(outcomes.classify_transport(outcomes.INVALID_RESPONSE), status=200, detail=problem)
    return body, data


@dataclass
class UpstreamStream:
    """An open streaming attempt. `first_events` waits for the first event(s); `batches` yields the rest."""

    route: RouteInfo
    response: httpx.Response
    deadline: float
    parser: SSEParser
    _iterator: AsyncIterator[bytes] | None = None

    async def _next_chunk(self, timeout: float) -> bytes | None:
        """The next raw chunk, None at the end of the body."""
        timeout = min(timeout, self.deadline - time.monotonic())
        if timeout <= 0:
            raise TimeoutError
        assert self._iterator is not None  # set when the stream was opened
        async with asyncio.timeout(timeout):
            try:
                return await anext(self._iterator)
            except StopAsyncIteration:
                return None

    async def first_events(self, timeout: float) -> list[bytes]:
        """Read until at least one event arrived (within `timeout`); AttemptFailed otherwise."""
        started = time.monotonic()
        while True:
            remaining = timeout - (time.monotonic() - started)
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await self._next_chunk(remaining)
            except TRANSPORT_ERRORS as exc:
                await self.close()
                raise _transport_failure(exc) from exc
            if chunk is None:
                events = self.parser.flush()
                if events:
                    return events
                await self.close()
                raise AttemptFailed(
                    outcomes.classify_transport(outcomes.INVALID_RESPONSE),
                    status=200,
                    detail="stream ended before its first event",
                )
            events = self.parser.feed(chunk)
            if events:
                return events

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """The remaining events, a list per network read; StreamBroken on idle timeout or a transport error.
        Ends at the end of the body."""
        idle = self.route.provider.idle_timeout_s
        try:
            while True:
                try:
                    chunk = await self._next_chunk(idle)
                except TimeoutError:
                    raise StreamBroken(outcomes.TIMEOUT) from None
                except TRANSPORT_ERRORS:
                    raise StreamBroken(outcomes.RESET) from None
                if chunk is None:
                    tail = self.parser.flush()
                    if tail:
                        yield tail
                    return
                events = self.parser.feed(chunk)
                if events:
                    yield events
        finally:
            await self.close()

    async def close(self) -> None:
        try:
            await self.response.aclose()
        except Exception:  # closing a broken connection may raise; nothing more to do with it
            pass


async def open_stream(
    route: RouteInfo, payload: bytes, deadline: float, path: str = CHAT_PATH
) -> tuple[UpstreamStream, list[bytes]]:
    """Start a streaming attempt and wait for its first event(s) (within `first_token_timeout_s`)."""
    budget = _attempt_budget(route, deadline)
    first_token = min(route.provider.first_token_timeout_s, budget)
    started = time.monotonic()
    try:
        async with asyncio.timeout(first_token):
            response = await _send(route, payload, budget, path)
    except TRANSPORT_ERRORS as exc:
        raise _transport_failure(exc) from exc
    if response.status_code >= 300:
        raise await _failure_from_response(response)
    stream = UpstreamStream(
        route=route,
        response=response,
        deadline=min(deadline, started + budget),
        parser=SSEParser(),
        _iterator=response.aiter_raw(),
    )
    first = await stream.first_events(first_token - (time.monotonic() - started))
    return stream, first
