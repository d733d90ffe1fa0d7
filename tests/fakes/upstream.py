"""A fake OpenAI-compatible upstream on loopback, for tests and benchmarks.

A small raw-asyncio HTTP/1.1 server (keep-alive, Content-Length request and response bodies, chunked or
close-delimited SSE streams) that runs on its own event loop in a background thread, so synchronous test code
can drive it:

    with FakeUpstream() as fake:
        fake.script(status(503), ok(tokens=5))       # first call gets a 503, the second an answer
        ... point a provider at fake.base_url ...
        assert fake.requests[1].body["model"] == "m"

It serves `POST /v1/chat/completions` (streaming and not), `POST /v1/completions` (legacy text completions with the
same behaviours, `text_completion` objects and chunks) and `GET /v1/models`. Only chat and text completions consume
the script (one behaviour per request, FIFO; `fake.default` when the queue is empty). `POST /v1/embeddings`
(issue 12) consumes the same script: deterministic vectors (`embedding_for`), float or base64 of little-endian
float32. Every request received is recorded in `fake.requests`, including those that were then reset or left
hanging.

Answers are deterministic: the text is a function of the last user message (`answer_for`), and a longer answer
to the same messages begins with the shorter one, so a restarted or continued answer can be checked against text
already delivered. Bytes on the wire mimic OpenAI's (`chat.completion.chunk` events, a usage-only chunk when
`stream_options.include_usage` is set, then `data: [DONE]`).

It must never talk to anything but the loopback interface, and never import RainyModel code: it plays the other
side of the wire. `python -m tests.fakes.upstream --port 9001` runs it standalone (for `bench/`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64 as _base64
import dataclasses
import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune ember fjord grove heath "
    "iris jade kelp lotus maple nectar opal pearl quartz river sage thyme umber violet willow yarrow zephyr "
    "acorn birch clover daisy fern ginger hazel ivy juniper kale laurel moss"
).split()

MAX_HEADER_BYTES = 64 * 1024
ROLE_OF_PREFILL = "assistant"


# --- behaviours ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one chat-completions request. Build them with the functions below (`ok`, `status`,
    `stall_after`, ...), which all accept any other field as a keyword so behaviours compose:
    `stall_after(3, tokens=50, token_delay=0.01)`; `b.but(no_usage=True)` returns a changed copy."""

    tokens: int = 20  # words in the full answer (one content chunk each)
    token_delay: float = 0.0  # seconds between content chunks
    first_token_delay: float = 0.0  # streams: after the headers, before the first event; else before the reply
    status: int = 200  # non-200: an OpenAI-shaped error body with this status
    retry_after: str | None = None  # Retry-After header on an error
    error_code: str | None = None
    error_message: str | None = None
    error_type: str | None = None
    error_param: str | None = None
    reset: bool = False  # close the socket (RST) before any response byte
    hang: bool = False  # read the request, then never answer
    stall_after: int | None = None  # streams: n content chunks, then silence with the socket open
    cut_after: int | None = None  # streams: n content chunks, then the connection closes mid-answer
    malformed_after: int | None = None  # streams: a non-JSON `data:` event after n content chunks
    done: bool = True  # streams: end with `data: [DONE]`
    usage: bool = True  # include usage (non-stream body; usage chunk when asked for)
    role_chunk: bool = True  # streams: OpenAI's first chunk carrying only the role
    reject_prefill: bool = False  # 400 when the last message has role assistant
    reject_suffix: bool = False  # /v1/completions: 400 when the body has a `suffix` (no FIM)
    continue_prefill: bool = False  # answer an assistant prefill with only the rest of the answer
    invalid_completion: bool = False  # 200 whose body is not a chat completion
    invalid_body: bytes = b'{"object": "list", "data": []}'
    framing: str = "chunked"  # streams: "chunked" or "close" (close-delimited body)
    finish_reason: str = "stop"
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers
    tool_call_after_text: tuple[str, str] | None = (
        None  # (name, arguments JSON): this call after the text (fu.tool_call)
    )
    honour_stop: bool = False  # cut the answer before the first of the request's `stop` strings
    tool_call: tuple[str, str] | None = None  # (name, arguments JSON): answer with this function call, no text
    text: str | None = None  # answer exactly this text (one chunk per word) instead of the seeded words

    def but(self, **changes) -> Behaviour:
        return dataclasses.replace(self, **changes)


def ok(tokens: int = 20, token_delay: float = 0.0, **more) -> Behaviour:
    """A normal answer of `tokens` words."""
    return Behaviour(tokens=tokens, token_delay=token_delay, **more)


def status(
    http_status: int,
    retry_after: float | str | None = None,
    code: str | None = None,
    message: str | None = None,
    **more,
) -> Behaviour:
    """An OpenAI-shaped error response with this HTTP status, `Retry-After` when given, and `code` as the error
    body's code."""
    if retry_after is not None and not isinstance(retry_after, str):
        retry_after = f"{retry_after:g}" if isinstance(retry_after, float) else str(retry_after)
    return Behaviour(status=http_status, retry_after=retry_after, error_code=code, error_message=message, **more)


def reset(**more) -> Behaviour:
    """Close the connection with a TCP reset before sending any response byte."""
    return Behaviour(reset=True, **more)


def hang(**more) -> Behaviour:
    """Read the request and never answer (the socket stays open until the client gives up)."""
    return Behaviour(hang=True, **more)


def first_token_delay(seconds: float, **more) -> Behaviour:
    """Streams: headers at once, then nothing for `seconds` before the first event. Non-streams: the whole reply
    comes after `seconds`."""
    return Behaviour(first_token_delay=seconds, **more)


def stall_after(n: int, **more) -> Behaviour:
    """Stream `n` content chunks, then go silent and keep the socket open."""
    return Behaviour(stall_after=n, **more)


def cut_after(n: int, **more) -> Behaviour:
    """Stream `n` content chunks, then close the connection mid-answer: no finish_reason, no `[DONE]`, and with
    chunked framing no end of the body either. (A FIN, not a reset, so the n chunks surely reach the client.)"""
    return Behaviour(cut_after=n, **more)


def malformed_event(after: int = 1, **more) -> Behaviour:
    """Insert a `data:` event that is not JSON after `after` content chunks; the answer is otherwise complete."""
    return Behaviour(malformed_after=after, **more)


def no_done(**more) -> Behaviour:
    """The stream ends after the finish_reason (and usage) chunk without `data: [DONE]`."""
    return Behaviour(done=False, **more)


def no_usage(**more) -> Behaviour:
    """No usage anywhere: not in the non-stream body, no usage chunk in streams."""
    return Behaviour(usage=False, **more)


def context_length_exceeded(**more) -> Behaviour:
    more.setdefault(
        "error_message",
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
    )
    return Behaviour(
        status=400,
        error_code="context_length_exceeded",
        error_type="invalid_request_error",
        error_param="messages",
        **more,
    )


def content_filter(**more) -> Behaviour:
    more.setdefault(
        "error_message",
        "The response was filtered due to the prompt triggering the content "
        "management policy. Please modify your prompt and retry.",
    )
    return Behaviour(
        status=400, error_code="content_filter", error_type="invalid_request_error", error_param="prompt", **more
    )


def reject_prefill(**more) -> Behaviour:
    """400 when the last message has role assistant (a prefill); otherwise a normal answer."""
    return Behaviour(reject_prefill=True, **more)


def continue_prefill(**more) -> Behaviour:
    """When the last message is an assistant prefill, answer with only the rest of the deterministic answer."""
    return Behaviour(continue_prefill=True, **more)


def invalid_completion(body: bytes = b'{"object": "list", "data": []}', **more) -> Behaviour:
    """200 with a JSON body that is not a chat completion (for streams too: JSON, not SSE)."""
    return Behaviour(invalid_completion=True, invalid_body=body, **more)


def tool_call(name: str, arguments: str, tokens: int = 0, **more) -> Behaviour:
    """Answer with one tool call (`finish_reason: tool_calls`) after `tokens` words of text; streamed, the
    arguments come in two pieces."""
    more.setdefault("finish_reason", "tool_calls")
    return Behaviour(tokens=tokens, tool_call_after_text=(name, arguments), **more)


def honour_stop(**more) -> Behaviour:
    """Stop before the first of the request's `stop` strings found in the answer (vLLM-like: non-streamed answers
    name it as `choices[0].stop_reason`)."""
    return Behaviour(honour_stop=True, **more)


# --- deterministic answers ----------------------------------------------------------------------------------------


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return json.dumps(content, sort_keys=True)


def _seed_of(messages) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def answer_words(messages, tokens: int) -> list[str]:
    seed = int.from_bytes(hashlib.sha256(_seed_of(messages).encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [f"{rng.choice(VOCABULARY)}{rng.randrange(100)}" for _ in range(tokens)]


def answer_for(messages, tokens: int = 20) -> str:
    """The full answer the fake gives to `messages`: `tokens` words seeded by the last user message.
    `answer_for(m, 50)` begins with `answer_for(m, 20)`."""
    return " ".join(answer_words(messages, tokens))


def _answer_pieces(messages, behaviour: Behaviour) -> list[str]:
    """The content of each chunk. A prefill continued here gets only what follows the prefill text."""
    words = behaviour.text.split(" ") if behaviour.text is not None else answer_words(messages, behaviour.tokens)
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if behaviour.continue_prefill and last.get("role") == ROLE_OF_PREFILL:
        prefill = _text_of(last.get("content") or "")
        full = "".join(pieces)
        rest = full[len(prefill) :] if full.startswith(prefill) else full
        pieces = re.findall(r"\s*\S+", rest)
    return pieces


def _completion_messages(body: dict) -> list[dict]:
    """A /v1/completions body seen as chat messages, so its answer is seeded like chat's: by prompt + suffix."""
    prompt = body.get("prompt")
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    suffix = body.get("suffix")
    return [{"role": "user", "content": text + (suffix if isinstance(suffix, str) else "")}]


def completion_answer_for(prompt, suffix: str | None = None, tokens: int = 20) -> str:
    """The text the fake gives to a /v1/completions request (the same for every route)."""
    return answer_for(_completion_messages({"prompt": prompt, "suffix": suffix}), tokens)


def reject_suffix(**more) -> Behaviour:
    """/v1/completions: 400 `unsupported_parameter` when the body has a `suffix` (an upstream without FIM)."""
    return Behaviour(reject_suffix=True, **more)


def _prompt_tokens(messages) -> int:
    return sum(len(_text_of(m.get("content", "")).split()) + 4 for m in messages if isinstance(m, dict))


# --- recorded requests --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: object  # parsed JSON, or None
    raw_body: bytes = b""
    behaviour: Behaviour | None = None  # what the fake did with it (chat completions only)
    received_at: float = field(default_factory=time.monotonic)
    client_closed: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def messages(self):
        return self.body.get("messages") if isinstance(self.body, dict) else None


class _RequestList(list):
    """A list appended to by the server thread and read by tests; appends are guarded so readers see whole
    entries, and `wait_for` lets a test wait for a request without sleeping blindly."""

    def __init__(self):
        super().__init__()
        self._cond = threading.Condition()

    def _add(self, item):
        with self._cond:
            self.append(item)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self) >= n, timeout):
                raise TimeoutError(f"fake upstream received {len(self)} requests, expected {n} within {timeout}s")
            return list(self)

    def chat(self) -> list[RecordedRequest]:
        return [r for r in list(self) if r.path.endswith("/chat/completions")]

    def completions(self) -> list[RecordedRequest]:
        """The legacy text-completion requests (POST /v1/completions)."""
        return [r for r in list(self) if r.path.rstrip("/").endswith("/v1/completions")]


# --- the server ---------------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


class _ClientGone(Exception):
    pass


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _error_body(status_code: int, message: str, type_: str | None = None, param=None, code=None) -> bytes:
    if type_ is None:
        type_ = "invalid_request_error" if status_code < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _head(status_code: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status_code} {REASONS.get(status_code, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FakeUpstream:
    """The fake upstream server. Use as a context manager, or call `start()` and `stop()`.

    `base_url` is "http://127.0.0.1:PORT/v1". `script(*behaviours)` queues behaviours; `default` applies when the
    queue is empty. `requests` holds every request received. `api_key`, when set, makes requests without
    `Authorization: Bearer <api_key>` get a 401 (behaviours are not consumed then).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Behaviour | None = None,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        record: bool = True,
    ):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the fake upstream only listens on loopback")
        self.host = host
        self.port = port
        self.default = default or ok()
        self.models = list(models)
        self.api_key = api_key
        self.record = record
        self.requests = _RequestList()
        self._queue: deque[Behaviour] = deque()
        self._queue_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._counter = 0
        self.connections_opened = 0

    # lifecycle (sync, called from test code)
    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeUpstream:
        started = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # surface bind errors to the caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    async def _open(self):
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEADER_BYTES, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self):
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    # scripting
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next chat-completions requests, one each, in order."""
        for behaviour in behaviours:
            if not isinstance(behaviour, Behaviour):
                raise TypeError(f"not a Behaviour: {behaviour!r}")
        with self._queue_lock:
            self._queue.extend(behaviours)

    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        with self._queue_lock:
            return len(self._queue)

    def _next_behaviour(self) -> Behaviour:
        with self._queue_lock:
            return self._queue.popleft() if self._queue else self.default

    answer_for = staticmethod(answer_for)

    # connection handling (server thread)
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None  # a connection is served in its own task
        self._connections.add(task)
        self.connections_opened += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = None
        try:
            keep_alive = True
            while keep_alive:
                try:
                    request = await self._read_request(reader)
                except _BadRequest as exc:
                    body = _error_body(400, str(exc))
                    writer.write(
                        _head(
                            400,
                            [
                                ("content-type", "application/json"),
                                ("content-length", str(len(body))),
                                ("connection", "close"),
                            ],
                        )
                        + body
                    )
                    await writer.drain()
                    break
                if request is None:
                    break
                keep_alive = request.headers.get("connection", "").lower() != "close"
                keep_alive = await self._dispatch(request, reader, writer) and keep_alive
        except (ConnectionError, _ClientGone):
            if request is not None:
                request.client_closed.set()  # the client went away while we were answering
        except asyncio.IncompleteReadError:
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("incomplete request head") from None
            return None  # the client closed an idle keep-alive connection
        except asyncio.LimitOverrunError:
            raise _BadRequest("request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest(f"bad request line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            raw = await self._read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest("bad Content-Length") from None
            raw = await reader.readexactly(length) if length else b""
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        return RecordedRequest(method=method, path=target.split("?", 1)[0], headers=headers, body=body, raw_body=raw)

    async def _read_chunked(self, reader) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _dispatch(self, request: RecordedRequest, reader, writer) -> bool:
        """Answer one request; returns whether the connection may be reused."""
        is_chat = request.path.rstrip("/").endswith("/chat/completions")
        if self.record:
            self.requests._add(request)

        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return await self._send_json(
                writer,
                401,
                _error_body(401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"),
            )
        if request.path.rstrip("/").endswith("/models") and request.method == "GET":
            created = int(time.time())
            data = [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in self.models]
            return await self._send_json(writer, 200, json.dumps({"object": "list", "data": data}).encode())
        if request.path.rstrip("/").endswith("/embeddings") and request.method == "POST":
            return await self._embeddings(request, reader, writer)
        if request.path.rstrip("/").endswith("/v1/completions") and request.method == "POST":
            return await self._completion(request, reader, writer)
        if not is_chat:
            return await self._send_json(
                writer, 404, _error_body(404, f"Unknown path {request.path}", code="not_found")
            )
        if request.method != "POST":
            return await self._send_json(writer, 405, _error_body(405, "Use POST.", code="method_not_allowed"))
        if not isinstance(request.body, dict) or not isinstance(request.body.get("messages"), list):
            return await self._send_json(
                writer,
                400,
                _error_body(400, "The body must be a JSON object with a messages list.", code="invalid_request"),
            )

        behaviour = self._next_behaviour()
        request.behaviour = behaviour
        return await self._perform(behaviour, request, reader, writer)

    async def _completion(self, request: RecordedRequest, reader, writer) -> bool:
        """POST /v1/completions: the same behaviours as chat, answering `text_completion` objects. The answer is
        seeded by prompt + suffix (`completion_answer_for`); the body says whether a suffix came
        (`fake_suffix_received`)."""
        body: dict[str, Any] = request.body if isinstance(request.body, dict) else {}
        if not isinstance(body, dict) or "prompt" not in body:
            return await self._send_json(
                writer, 400, _error_body(400, "The body must be a JSON object with a prompt.", code="invalid_request")
            )
        behaviour = self._next_behaviour()
        request.behaviour = behaviour
        if behaviour.reject_suffix and body.get("suffix") is not None:
            return await self._send_json(
                writer,
                400,
                _error_body(
                    400,
                    "This model does not support the suffix parameter.",
                    "invalid_request_error",
                    "suffix",
                    "unsupported_parameter",
                ),
            )
        return await self._perform(behaviour, request, reader, writer, kind="completion")

    async def _perform(self, b: Behaviour, request: RecordedRequest, reader, writer, kind: str = "chat") -> bool:
        body: dict[str, Any] = request.body if isinstance(request.body, dict) else {}
        messages = body["messages"] if kind == "chat" else _completion_messages(body)
        model = body.get("model") if isinstance(body.get("model"), str) else "fake-model"
        stream = body.get("stream") is True

        if b.reset:
            _abort_with_rst(writer)
            return False
        if b.hang:
            await self._wait_client_gone(reader, request)
            return False
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if b.reject_prefill and last.get("role") == ROLE_OF_PREFILL:
            return await self._send_json(
                writer,
                400,
                _error_body(
                    400,
                    "Assistant prefill is not supported: the last message must have role user or tool.",
                    "invalid_request_error",
                    "messages",
                    "invalid_request",
                ),
            )
        if b.status != 200:
            extra = [("retry-after", b.retry_after)] if b.retry_after is not None else []
            message = b.error_message or f"fake upstream error {b.status}"
            if b.first_token_delay:
                await asyncio.sleep(b.first_token_delay)
            return await self._send_json(
                writer, b.status, _error_body(b.status, message, b.error_type, b.error_param, b.error_code), extra
            )
        if b.invalid_completion:
            return await self._send_json(writer, 200, b.invalid_body)

        pieces = _answer_pieces(messages, b)
        matched_stop = None
        if b.honour_stop and isinstance(body.get("stop"), list):
            text = "".join(pieces)
            found = [(text.find(s), s) for s in body["stop"] if isinstance(s, str) and s and s in text]
            if found:
                cut, matched_stop = min(found)
                pieces = [text[:cut]] if cut else []
        self._counter += 1
        completion_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-fake{self._counter:08d}"
        created = int(time.time())
        usage = {
            "prompt_tokens": _prompt_tokens(messages),
            "completion_tokens": len(pieces),
            "total_tokens": _prompt_tokens(messages) + len(pieces),
        }
        if stream:
            include_usage = (
                isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage") is True
            )
            return await self._stream(
                b,
                request,
                reader,
                writer,
                pieces,
                completion_id,
                created,
                model,
                usage if (include_usage and b.usage) else None,
                kind=kind,
            )

        if b.first_token_delay:
            await asyncio.sleep(b.first_token_delay)
        if b.token_delay:
            await asyncio.sleep(b.token_delay * len(pieces))
        completion: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                    "logprobs": None,
                    "finish_reason": b.finish_reason,
                }
            ],
            "system_fingerprint": "fp_fake",
        }
        if matched_stop is not None:
            completion["choices"][0]["stop_reason"] = matched_stop
        if b.tool_call_after_text is not None:
            completion["choices"][0]["message"]["tool_calls"] = [
                {
                    "id": f"call_fake{self._counter:08d}",
                    "type": "function",
                    "function": {"name": b.tool_call_after_text[0], "arguments": b.tool_call_after_text[1]},
                }
            ]
        if b.tool_call is not None:
            completion["choices"][0]["message"].update(
                content=None,
                tool_calls=[
                    {
                        "id": f"call_fake{self._counter:08d}",
                        "type": "function",
                        "function": {"name": b.tool_call[0], "arguments": b.tool_call[1]},
                    }
                ],
            )
            completion["choices"][0]["finish_reason"] = "tool_calls"
        if kind == "completion":
            completion = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": "".join(pieces), "logprobs": None, "finish_reason": b.finish_reason}],
                "system_fingerprint": "fp_fake",
                "fake_suffix_received": body.get("suffix") is not None,
            }
        if b.usage:
            completion["usage"] = usage
        payload = json.dumps(completion).encode()
        if b.cut_after is not None or b.stall_after is not None:
            writer.write(
                _head(200, [("content-type", "application/json"), ("content-length", str(len(payload)))])
                + payload[: len(payload) // 2]
            )
            await writer.drain()
            if b.stall_after is not None:
                await self._wait_client_gone(reader, request)
            else:
                _abort_with_rst(writer)
            return False
        return await self._send_json(writer, 200, payload, list(b.headers))

    async def _stream(
        self, b: Behaviour, request, reader, writer, pieces, completion_id, created, model, usage, kind: str = "chat"
    ) -> bool:
        chunked = b.framing == "chunked"
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("x-request-id", completion_id),
        ]
        headers.append(("transfer-encoding", "chunked") if chunked else ("connection", "close"))
        headers += list(b.headers)
        # Events are buffered and written together unless something (a delay, a stall, a cut) must happen
        # between them: one write per answer keeps the fake far faster than anything measured against it.
        out = [_head(200, headers)]

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        def chunk(delta: dict, finish_reason=None) -> bytes:
            if kind == "completion":  # OpenAI's legacy stream: `text` in each choice, no delta, no role chunk
                event = {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish_reason}
                    ],
                }
                return b"data: " + json.dumps(event).encode() + b"\n\n"
            event = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        def send(data: bytes):
            out.append(frame(data))

        async def flush():
            if writer.is_closing():
                raise _ClientGone()
            if out:
                writer.write(b"".join(out))
                out.clear()
            await writer.drain()

        async def stop_here(cut: bool) -> bool:
            await flush()
            if cut:
                writer.close()  # FIN after the data, but no end of the chunked body, finish_reason or [DONE]
            else:
                await self._wait_client_gone(reader, request)
            return False

        if b.first_token_delay:
            await flush()
            await asyncio.sleep(b.first_token_delay)
        if b.role_chunk and kind == "chat":
            send(chunk({"role": "assistant", "content": "", "refusal": None}))
        if b.tool_call is not None:  # the call in two argument pieces, then finish_reason tool_calls
            name, arguments = b.tool_call
            half = len(arguments) // 2
            send(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": f"call_fake{self._counter:08d}",
                                "type": "function",
                                "function": {"name": name, "arguments": arguments[:half]},
                            }
                        ]
                    }
                )
            )
            send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}))
            pieces, b = [], b.but(finish_reason="tool_calls")
        for i, piece in enumerate(pieces):
            if b.malformed_after == i:
                send(b"data: {this is not json\n\n")
            if b.stall_after == i or b.cut_after == i:
                return await stop_here(cut=b.cut_after == i)
            if b.token_delay and i:
                await flush()
                await asyncio.sleep(b.token_delay)
            send(chunk({"content": piece}))
        n = len(pieces)
        if b.tool_call_after_text is not None:
            name, arguments = b.tool_call_after_text
            half = len(arguments) // 2
            send(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": f"call_{completion_id}",
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for part in (arguments[:half], arguments[half:]):
                send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        if b.malformed_after is not None and b.malformed_after >= n:
            send(b"data: {this is not json\n\n")
        if (b.stall_after is not None and b.stall_after >= n) or (b.cut_after is not None and b.cut_after >= n):
            return await stop_here(cut=b.cut_after is not None and b.cut_after >= n)
        send(chunk({}, b.finish_reason))
        if usage is not None:
            event = {
                "id": completion_id,
                "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": usage,
            }
            send(b"data: " + json.dumps(event).encode() + b"\n\n")
        if b.done:
            send(b"data: [DONE]\n\n")
        if chunked:
            out.append(b"0\r\n\r\n")
            await flush()
            return True
        await flush()
        writer.close()
        return False

    async def _send_json(self, writer, status_code: int, payload: bytes, extra=()) -> bool:
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))] + list(extra)
        writer.write(_head(status_code, headers) + payload)
        await writer.drain()
        return True

    async def _wait_client_gone(self, reader: asyncio.StreamReader, request: RecordedRequest):
        """Keep the connection open, sending nothing, until the client closes it (or the fake stops)."""
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            request.client_closed.set()

    # embeddings (issue 12): POST /v1/embeddings consumes the same script as chat completions
    async def _embeddings(self, request: RecordedRequest, reader, writer) -> bool:
        """Deterministic vectors (`embedding_for`), float or base64 of little-endian float32 as asked, with usage.
        Scripted behaviours apply as for chat: `status`, `reset`, `hang`, `first_token_delay`, `no_usage`,
        `invalid_completion` (a 200 whose body is `invalid_body`); `tokens` is the vector's length unless the
        request asks for `dimensions`."""
        body: dict[str, Any] = request.body if isinstance(request.body, dict) else {}
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return await self._send_json(
                writer, 400, _error_body(400, "The body must be a JSON object with an input.", code="invalid_request")
            )
        b = self._next_behaviour()
        request.behaviour = b
        if b.reset:
            _abort_with_rst(writer)
            return False
        if b.hang:
            await self._wait_client_gone(reader, request)
            return False
        if b.first_token_delay:
            await asyncio.sleep(b.first_token_delay)
        if b.status != 200:
            extra = [("retry-after", b.retry_after)] if b.retry_after is not None else []
            return await self._send_json(
                writer,
                b.status,
                _error_body(
                    b.status,
                    b.error_message or f"fake upstream error {b.status}",
                    b.error_type,
                    b.error_param,
                    b.error_code,
                ),
                extra,
            )
        if b.invalid_completion:
            return await self._send_json(writer, 200, b.invalid_body)
        dimensions: int = body["dimensions"] if isinstance(body.get("dimensions"), int) else b.tokens
        base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector = embedding_for(item, dimensions)
            encoded = _base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        answer = {"object": "list", "data": data, "model": body.get("model") or "fake-model"}
        if b.usage:
            tokens = sum(len(item) if isinstance(item, list) else len(str(item).split()) for item in inputs)
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return await self._send_json(writer, 200, json.dumps(answer).encode(), list(b.headers))


def embedding_for(item, dimensions: int = 20) -> list[float]:
    """The fake's vector for one input (a string or a token list): `dimensions` floats in [-1, 1) seeded by the
    input, each exactly representable as float32 so a base64 answer decodes to the same numbers."""
    seed = int.from_bytes(hashlib.sha256(json.dumps(item).encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [rng.randrange(-1024, 1024) / 1024 for _ in range(dimensions)]


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close so the peer sees a reset, not an orderly end: SO_LINGER 0 turns close() into RST."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


# --- standalone, for benchmarks -----------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream on loopback (answers ok).")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--tokens", type=int, default=20, help="words per answer")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    fake = FakeUpstream(port=args.port, default=ok(tokens=args.tokens), record=False)

    async def serve():
        await fake._open()
        print(f"fake upstream listening on {fake.base_url}", flush=True)
        await fake._server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
