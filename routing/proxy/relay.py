"""Streaming relay (SPEC §5.7): relay upstream events to the client as they arrive, check each one, and when a
stream breaks after tokens were sent, continue on the next usable route.

Continuation: a route that `supports_prefill` gets the delivered text as an assistant prefill and its continuation
is relayed; otherwise (or when it rejects the prefill) the request is restarted there and relayed from the point
where its answer passes the delivered text, provided it begins with exactly that text. When nothing can continue,
the stream ends with a `stream_interrupted` error event and no `[DONE]`, so no client mistakes a truncated answer
for a complete one. Errors of rescue attempts are never shown to the client in place of the original failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from rainymodel_site.api_errors import error_body
from routing.proxy import breaker, outcomes
from routing.proxy.call import AttemptUsage, Call
from routing.proxy.loop import run_attempts
from routing.proxy.sse import DONE, DONE_EVENT, event
from routing.proxy.upstream import (
    CHAT_PATH,
    AttemptFailed,
    StreamBroken,
    UpstreamStream,
    open_stream,
)
from routing.snapshot import RouteInfo

log = logging.getLogger(__name__)


class SpliceMismatch(Exception):
    """A restarted answer does not begin with the text already delivered."""


@dataclass
class StreamState:
    """What the client has received so far."""

    include_usage: bool
    delivered: list[str] = field(default_factory=list)  # content of choice 0, in order
    delivered_chars: int = 0
    finish_seen: bool = False
    done: bool = False
    tool_calls_seen: bool = False
    multi_choice: bool = False

    @property
    def text(self) -> str:
        return "".join(self.delivered)

    @property
    def can_continue(self) -> bool:
        return not self.tool_calls_seen and not self.multi_choice


class ChatEvents:
    """What a chat-completions client receives: each relayed chunk as it came, `[DONE]`, and the
    `stream_interrupted` error event (the chat operation's `StreamEvents`, see operations/__init__.py)."""

    def event(self, payload: bytes) -> bytes:
        return event(payload)

    def done(self) -> bytes:
        return DONE_EVENT

    def interrupted(self, reason: str) -> bytes:
        return Relay.interruption_event(reason)


def completion_chunk(payload: bytes) -> dict | None:
    """The event as a completion chunk (a JSON object with a `choices` list and no `error`), else None."""
    if payload == DONE:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "error" in obj or not isinstance(obj.get("choices"), list):
        return None
    return obj


def is_valid_first_event(payload: bytes) -> bool:
    """Before headers are sent, only a real completion chunk counts as 'the first event'."""
    return completion_chunk(payload) is not None


class Relay:
    """Relays one upstream stream (and its continuations) to the client as SSE bytes."""

    def __init__(
        self,
        *,
        call: Call,
        state: StreamState,
        payload: dict,
        remaining_routes: list[RouteInfo],
        events=None,
        upstream_path: str = CHAT_PATH,
    ):
        self.call = call  # attempts, usages, the deadline and the key (breaker failures are attributed to it)
        self.events = events or ChatEvents()  # the operation's client-side encoding (operations.StreamEvents)
        self.upstream_path = upstream_path
        self.state = state
        self.payload = payload
        self.remaining = remaining_routes
        self.interrupted_reason: str | None = None

    @property
    def usages(self) -> list[AttemptUsage]:
        return self.call.usages

    async def run(self, stream: UpstreamStream, first_events: list[bytes]) -> AsyncIterator[bytes]:
        """Yield client bytes until the answer is complete or cannot be continued."""
        usage = self.usages[-1]
        try:
            async for chunk in self._relay_one(stream, first_events, usage, skip_chars=0):
                yield chunk
            return
        except StreamBroken as broken:
            reason = broken.reason
            self.call.record_attempt(stream.route, outcomes.STREAM_INTERRUPTED, 200, detail=reason, replace_last=True)
            await breaker.record_failure(stream.route, outcomes.STREAM_INTERRUPTED, key=self.call.key)
        async for chunk in self._continue(reason):
            yield chunk

    async def _relay_one(
        self, stream: UpstreamStream, first_events: list[bytes], usage: AttemptUsage, skip_chars: int
    ) -> AsyncIterator[bytes]:
        """Relay one upstream stream. `skip_chars`: how much of its answer the client already has (restart).

        Events that arrived in one network read go out in one write: nothing waits for more input, but a burst
        of events does not cost a send per event."""
        splice = Splice(self.state.text[:skip_chars]) if skip_chars else None

        async def batches():
            yield first_events
            async for batch in stream.batches():
                yield batch

        async for batch in batches():
            out: list[bytes] = []
            try:
                for payload in batch:
                    if payload == DONE:
                        if not self.state.finish_seen and splice is not None and not splice.passed:
                            raise SpliceMismatch("the restarted answer ended before passing the delivered text")
                        self.state.done = True
                        out.append(self.events.done())
                        break
                    relayed = self._check(payload, stream, usage, splice)
                    if relayed is not None:
                        piece = self.events.event(relayed)
                        if piece:
                            out.append(piece)
            except (StreamBroken, SpliceMismatch):
                if out:
                    yield b"".join(out)
                raise
            if out:
                yield b"".join(out)
            if self.state.done:
                await stream.close()
                return
        # End of body without [DONE].
        if self.state.finish_seen:
            self.state.done = True
            yield self.events.done()
            return
        raise StreamBroken(outcomes.RESET)

    def _check(self, payload: bytes, stream: UpstreamStream, usage: AttemptUsage, splice) -> bytes | None:
        """One upstream event: note what it carries and return the payload to relay (None: drop it)."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("dropped a malformed event from %s", stream.route.label)
            return None
        if not isinstance(obj, dict):
            return None
        if "error" in obj:
            raise StreamBroken(outcomes.UPSTREAM_ERROR_EVENT)
        if isinstance(obj.get("usage"), dict):
            usage.prompt_tokens = obj["usage"].get("prompt_tokens")
            usage.completion_tokens = obj["usage"].get("completion_tokens")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return None
        if not choices:
            # The usage-only chunk: relayed only when the client asked for usage.
            return payload if self.state.include_usage else None
        if len(choices) > 1 or any(isinstance(c, dict) and c.get("index", 0) != 0 for c in choices):
            self.state.multi_choice = True
        choice = choices[0] if isinstance(choices[0], dict) else {}
        delta = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
        content = delta["content"] if isinstance(delta.get("content"), str) else ""
        legacy = "delta" not in choice and isinstance(choice.get("text"), str)  # a /v1/completions chunk
        if legacy:
            content = choice["text"]
        if delta.get("tool_calls"):
            self.state.tool_calls_seen = True
        usage.completion_chars += len(content)
        if splice is not None and not splice.passed:
            new_text = splice.feed(content)  # raises SpliceMismatch
            if new_text is None:
                if not choice.get("finish_reason"):
                    return None
                if splice.seen != splice.delivered:
                    raise SpliceMismatch("the restarted answer ended before passing the delivered text")
                new_text = ""  # it ends exactly where the delivered text ends: relay just the finish
                splice.passed = True
            if legacy:
                choice = dict(choice, text=new_text)
            else:
                delta = dict(delta, content=new_text)
                delta.pop("role", None)
                choice = dict(choice, delta=delta)
            payload = orjson.dumps(dict(obj, choices=[choice] + choices[1:]))
            content = new_text
        if content:
            self.state.delivered.append(content)
            self.state.delivered_chars += len(content)
        if choice.get("finish_reason"):
            self.state.finish_seen = True
        return payload

    async def _continue(self, original_reason: str) -> AsyncIterator[bytes]:
        """Try the remaining routes (through the attempt loop, one attempt each) to finish the answer; else end
        with `stream_interrupted`."""
        while self.remaining and self.state.can_continue:
            found = await run_attempts(
                self.call,
                self.remaining,
                self._open_continuation,
                retries=False,
                rescue=True,
                ok_outcome=lambda opened: opened[0],
            )
            if found is None:
                break
            route, (_, skip, stream, first) = found
            usage = AttemptUsage(route=route)
            self.call.usages.append(usage)
            try:
                async for chunk in self._relay_one(stream, first, usage, skip_chars=skip):
                    yield chunk
                return
            except SpliceMismatch:
                await stream.close()
                self.call.record_attempt(route, "splice_mismatch", 200, replace_last=True)
            except StreamBroken as broken:
                self.call.record_attempt(
                    route, outcomes.STREAM_INTERRUPTED, 200, detail=broken.reason, replace_last=True
                )
                await breaker.record_failure(route, outcomes.STREAM_INTERRUPTED, key=self.call.key)
        self.interrupted_reason = original_reason
        yield self.events.interrupted(original_reason)

    async def _open_continuation(self, route: RouteInfo) -> tuple[str, int, UpstreamStream, list[bytes]]:
        """One continuation attempt on `route`: (outcome "continued" or "restarted", chars to skip, stream, first
        events). A prefill the route rejects (400/422) is noted and the request restarted there instead."""
        delivered = self.state.text
        # Prefill needs chat `messages`; a legacy completion (`prompt`) is only ever restarted and spliced.
        can_prefill = route.supports_prefill and isinstance(self.payload.get("messages"), list)
        modes = ["prefill", "restart"] if can_prefill and self.state.delivered_chars else ["restart"]
        for mode in modes:
            body = dict(self.payload, model=route.upstream_model)
            if mode == "prefill":
                body["messages"] = list(body["messages"]) + [{"role": "assistant", "content": delivered}]
            started = time.monotonic()
            try:
                stream, first = await open_stream(route, orjson.dumps(body), self.call.deadline, self.upstream_path)
            except AttemptFailed as failed:
                if mode == "prefill" and failed.status in (400, 422):
                    self.call.record_attempt(route, failed.decision.reason, failed.status, started=started)
                    continue
                raise
            if mode == "prefill":
                return "continued", 0, stream, first
            return "restarted", len(delivered), stream, first
        raise AssertionError("unreachable: the restart mode returns or raises")

    @staticmethod
    def interruption_event(reason: str) -> bytes:
        message = (
            f"The upstream stream was interrupted and could not be continued; the answer is incomplete ({reason})."
        )
        return event(orjson.dumps(error_body(message, "upstream_error", outcomes.STREAM_INTERRUPTED)))


class Splice:
    """Follows a restarted answer until it passes the text the client already has."""

    def __init__(self, delivered: str):
        self.delivered = delivered
        self.seen = ""
        self.passed = not delivered

    def feed(self, content: str) -> str | None:
        """The part of `content` beyond the delivered text, or None while still inside it."""
        combined = self.seen + content
        if len(combined) <= len(self.delivered):
            if not self.delivered.startswith(combined):
                raise SpliceMismatch("the restarted answer differs from the delivered text")
            self.seen = combined
            return None
        if not combined.startswith(self.delivered):
            raise SpliceMismatch("the restarted answer differs from the delivered text")
        self.passed = True
        self.seen = combined
        return combined[len(self.delivered) :]
