"""routing/proxy/relay.py: the splice of a restarted answer, the guards that stop a continuation which could not
be exact (tool calls, several choices), and the checks on each relayed event — without a server."""

from __future__ import annotations

import orjson
import pytest

from routing.proxy import outcomes
from routing.proxy.call import AttemptUsage, Call
from routing.proxy.relay import Relay, Splice, SpliceMismatch, StreamState
from routing.proxy.sse import DONE
from routing.proxy.upstream import StreamBroken
from tests.factories import make_provider, make_route


def chunk(content=None, *, finish=None, tool_calls=None, index=0, choices=None) -> bytes:
    delta = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    if choices is None:
        choices = [{"index": index, "delta": delta, "finish_reason": finish}]
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": choices})


class ScriptedStream:
    """Stands in for an UpstreamStream: yields the given batches of event payloads, then breaks (or ends)."""

    def __init__(self, route, batches, *, breaks: bool):
        self.route = route
        self._batches = batches
        self._breaks = breaks
        self.closed = False

    async def batches(self):
        for batch in self._batches:
            yield batch
        if self._breaks:
            raise StreamBroken(outcomes.RESET)

    async def close(self):
        self.closed = True


class Attempts:
    """The call's attempts as (route label, outcome) pairs, read when compared."""

    def __init__(self, call):
        self.call = call

    def pairs(self):
        return [(a.label, a.outcome) for a in self.call.attempts]

    def __eq__(self, other):
        return self.pairs() == other

    def __getitem__(self, i):
        return self.pairs()[i]


def make_relay(first_route, remaining, *, include_usage=False):
    call = Call(
        request_id="t",
        client_request_id=False,
        started=0.0,
        created_at=None,
        deadline=float("inf"),
        client_ip=None,
        user_agent="",
        usages=[AttemptUsage(route=first_route)],
    )
    call.record_attempt(first_route, "ok", 200)
    relay = Relay(
        call=call,
        state=StreamState(include_usage=include_usage),
        payload={"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        remaining_routes=list(remaining),
    )
    return relay, Attempts(call)


async def run(relay, stream, first):
    out = b""
    async for piece in relay.run(stream, first):
        out += piece
    return out


def payloads(out: bytes) -> list[bytes]:
    return [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]


# --- Splice ---------------------------------------------------------------------------------------------------


def test_splice_relays_only_what_passes_the_delivered_text():
    s = Splice("Hello wor")
    assert s.feed("Hel") is None
    assert s.feed("lo w") is None
    assert s.feed("orld!") == "ld!"
    assert s.passed


def test_splice_refuses_an_answer_that_differs_inside_the_delivered_text():
    s = Splice("Hello world")
    with pytest.raises(SpliceMismatch):
        s.feed("Help")


def test_splice_refuses_an_answer_that_differs_at_the_crossing():
    s = Splice("Hello")
    with pytest.raises(SpliceMismatch):
        s.feed("Jello there")


def test_nothing_delivered_means_already_passed():
    assert Splice("").passed


# --- continuation guards --------------------------------------------------------------------------------------


async def test_a_stream_with_tool_calls_is_not_continued_elsewhere():
    p = make_provider(failures=100)
    first, second = make_route(1, p), make_route(2, p)
    relay, attempts = make_relay(first, [second])
    call = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}]
    stream = ScriptedStream(first, [[chunk(tool_calls=call)]], breaks=True)
    out = await run(relay, stream, [chunk("")])
    events = payloads(out)
    assert b"stream_interrupted" in events[-1]
    assert DONE not in events
    assert attempts == [(first.label, outcomes.STREAM_INTERRUPTED)]  # the next route was never tried
    assert relay.remaining == [second]


async def test_a_stream_with_several_choices_is_not_continued_elsewhere():
    p = make_provider(failures=100)
    first, second = make_route(1, p), make_route(2, p)
    relay, attempts = make_relay(first, [second])
    two = chunk(
        choices=[
            {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
        ]
    )
    stream = ScriptedStream(first, [[two]], breaks=True)
    out = await run(relay, stream, [chunk("")])
    assert b"stream_interrupted" in payloads(out)[-1]
    assert attempts == [(first.label, outcomes.STREAM_INTERRUPTED)]
    assert relay.remaining == [second]


async def test_a_plain_text_stream_is_offered_to_the_next_route():
    p = make_provider(failures=100)  # connection refused there: the rescue fails, the original reason is shown
    first, second = make_route(1, p), make_route(2, p)
    relay, attempts = make_relay(first, [second])
    stream = ScriptedStream(first, [[chunk("Hello")]], breaks=True)
    out = await run(relay, stream, [chunk("")])
    assert attempts[0] == (first.label, outcomes.STREAM_INTERRUPTED)
    assert attempts[1][0] == second.label  # the guard let the continuation try
    last = orjson.loads(payloads(out)[-1])
    assert last["error"]["code"] == "stream_interrupted"
    assert outcomes.RESET in last["error"]["message"]  # the original failure, not the rescue's


# --- event checks ---------------------------------------------------------------------------------------------


async def test_malformed_events_are_dropped_and_the_rest_relayed():
    route = make_route(1)
    relay, _ = make_relay(route, [])
    stream = ScriptedStream(
        route, [[b"{not json", b"[1, 2]", b'{"no": "choices"}', chunk("Hi", finish="stop"), DONE]], breaks=False
    )
    out = await run(relay, stream, [chunk("")])
    events = payloads(out)
    assert events[-1] == DONE
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]] == ["", "Hi"]


async def test_usage_only_chunk_is_relayed_only_when_asked_and_counted_either_way():
    route = make_route(1)
    usage_chunk = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    for asked in (False, True):
        relay, _ = make_relay(route, [], include_usage=asked)
        stream = ScriptedStream(route, [[chunk("Hi", finish="stop"), usage_chunk, DONE]], breaks=False)
        out = await run(relay, stream, [chunk("")])
        assert (usage_chunk in payloads(out)) is asked
        assert (relay.usages[-1].prompt_tokens, relay.usages[-1].completion_tokens) == (3, 2)


async def test_a_finished_stream_without_done_gets_one():
    route = make_route(1)
    relay, _ = make_relay(route, [])
    stream = ScriptedStream(route, [[chunk("Hi", finish="stop")]], breaks=False)
    out = await run(relay, stream, [chunk("")])
    assert payloads(out)[-1] == DONE


async def test_an_error_event_mid_stream_breaks_the_stream():
    route = make_route(1)
    relay, attempts = make_relay(route, [])
    stream = ScriptedStream(route, [[chunk("Hi"), b'{"error": {"message": "boom"}}']], breaks=False)
    out = await run(relay, stream, [chunk("")])
    assert b"stream_interrupted" in payloads(out)[-1]
    assert attempts == [(route.label, outcomes.STREAM_INTERRUPTED)]
