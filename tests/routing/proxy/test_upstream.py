"""routing/proxy/upstream.py against the fake upstream on loopback: what the pooled transport (httpx's API over
aiohttp's pool) sends and keeps, how its failures are classified, and how a stream's bytes are handed over."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from routing.proxy import outcomes, upstream
from routing.proxy.upstream import AttemptFailed, StreamBroken, complete, open_stream
from tests.factories import make_provider, make_route
from tests.fakes import upstream as fu

BODY = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
STREAM_BODY = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True})


def route_to(fake_or_url) -> object:
    base_url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.base_url
    return make_route(1, make_provider(base_url=base_url))


def deadline() -> float:
    return time.monotonic() + 5


async def test_an_upstream_cookie_is_never_sent_back(fake_upstream):
    """A pooled client with a cookie jar would hand one key's upstream session cookie to every later request."""
    fake_upstream.script(fu.ok(headers=(("set-cookie", "upstream_session=secret; Path=/"),)))
    # By name, not by IP address: a cookie jar ignores cookies from IP-address hosts unless told otherwise.
    route = route_to(fake_upstream.base_url.replace("127.0.0.1", "localhost"))
    await complete(route, BODY, deadline())
    await complete(route, BODY, deadline())
    first, second = fake_upstream.requests.chat()
    assert "cookie" not in first.headers and "cookie" not in second.headers


async def test_no_header_of_the_client_library_is_added(fake_upstream):
    """No Accept-Encoding (an answer compressed on our behalf would be relayed as compressed bytes) and no
    library User-Agent: the upstream sees our headers and the provider's extra headers only."""
    await complete(route_to(fake_upstream), BODY, deadline())
    sent = fake_upstream.requests.chat()[0].headers
    assert "accept-encoding" not in sent
    assert "user-agent" not in sent
    assert sent["content-type"] == "application/json"


async def test_a_long_response_header_is_accepted(fake_upstream):
    """Up to 64 KB per header line, as httpx's own transport allowed (aiohttp's default is 8 KB)."""
    fake_upstream.script(fu.ok(headers=(("x-long", "a" * 20_000),)))
    body, data = await complete(route_to(fake_upstream), BODY, deadline())
    assert data["choices"]


async def test_connection_refused_is_a_connect_error():
    with pytest.raises(AttemptFailed) as failed:
        await complete(route_to("http://127.0.0.1:9/v1"), BODY, deadline())
    assert failed.value.decision.reason == outcomes.CONNECT_ERROR


async def test_a_reset_before_the_answer_is_a_reset_not_a_timeout(fake_upstream):
    """httpx-aiohttp maps aiohttp's connection errors onto httpx.ConnectTimeout; the classification looks past it."""
    fake_upstream.script(fu.reset())
    with pytest.raises(AttemptFailed) as failed:
        await complete(route_to(fake_upstream), BODY, deadline())
    assert failed.value.decision.reason == outcomes.RESET


async def test_a_silent_upstream_times_out(fake_upstream):
    fake_upstream.script(fu.hang())
    started = time.monotonic()
    with pytest.raises(AttemptFailed) as failed:
        await complete(route_to(fake_upstream), BODY, time.monotonic() + 0.3)
    assert failed.value.decision.reason == outcomes.TIMEOUT
    assert time.monotonic() - started < 2


async def test_events_that_arrive_in_one_read_are_handed_over_together(fake_upstream):
    """The fake writes a whole 20-token stream in one write: the first read carries many events (httpx's own
    transport handed them over one HTTP chunk, one event, at a time), and the relay sends them in one write."""
    stream, first = await open_stream(route_to(fake_upstream), STREAM_BODY, deadline())
    rest = [event async for batch in stream.batches() for event in batch]
    assert len(first) > 10
    assert first[0].startswith(b"{") and (first + rest)[-1] == b"[DONE]"


async def test_closing_a_stream_midway_closes_its_upstream_connection(fake_upstream):
    fake_upstream.default = fu.ok(tokens=30, token_delay=0.05)
    stream, first = await open_stream(route_to(fake_upstream), STREAM_BODY, deadline())
    await stream.close()
    # Waited for off the loop: the socket is closed by a callback of this loop (aiohttp closes the transport).
    assert await asyncio.to_thread(fake_upstream.requests.chat()[0].client_closed.wait, 3)


async def test_the_pool_is_one_per_event_loop_and_closed_with_it():
    transport = upstream.pool()
    assert upstream.pool() is transport
    await upstream.close_client()
    assert upstream.pool() is not transport


async def test_events_received_before_a_cut_are_relayed_before_the_break(fake_upstream):
    """The upstream sends the role chunk and three words, then closes mid-body: those four events are delivered
    (the stream had begun), and only then does the stream break as a reset."""
    fake_upstream.default = fu.cut_after(3)
    stream, first = await open_stream(route_to(fake_upstream), STREAM_BODY, deadline())
    events = list(first)
    with pytest.raises(StreamBroken) as broken:
        async for batch in stream.batches():
            events += batch
    assert broken.value.reason == outcomes.RESET
    assert len(events) == 4 and all(orjson.loads(e)["choices"] for e in events)


async def test_bytes_received_before_a_cut_are_read_before_its_error(fake_upstream):
    """aiohttp's own reader raises a stored connection error before handing over what it had buffered: when the
    events and the cut both arrived before the relay read again, the events were lost. Here the body is read only
    once the cut has surely arrived."""
    fake_upstream.default = fu.cut_after(3, first_token_delay=0.05)
    response = await upstream._send(route_to(fake_upstream), STREAM_BODY, 5)
    await asyncio.sleep(0.5)  # the three events and the close arrive meanwhile
    received = b""
    with pytest.raises(upstream.TRANSPORT_ERRORS):
        async for chunk in response.aiter_raw():
            received += chunk
    await response.aclose()
    assert received.count(b"data: ") == 4  # the role chunk and three words


async def test_a_cut_non_streamed_answer_is_a_reset(fake_upstream):
    fake_upstream.script(fu.cut_after(3))
    with pytest.raises(AttemptFailed) as failed:
        await complete(route_to(fake_upstream), STREAM_BODY, deadline())
    assert failed.value.decision.reason == outcomes.RESET
