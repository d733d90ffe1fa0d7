"""routing/proxy/operations: a tiny test operation ("echo", served as the completions endpoint, translated onto
chat completions with its own answer, error and stream event shapes) run through the shared request path
(`flow.serve`) against a fake upstream on loopback. It shows what an operation supplies and that the flow keeps
the rest: one RequestLog row under the operation's endpoint, errors in the operation's shape, headers waiting for
a valid first event, and a break ending with the operation's own failure event."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from rainymodel_site.api_errors import ApiError
from routing.proxy import flow
from routing.proxy import upstream as upstream_layer
from routing.proxy.operations import Operation, StreamRules
from routing.proxy.operations.chat import usage as chat_usage
from routing.proxy.relay import is_valid_first_event
from routing.proxy.upstream import CHAT_PATH, is_chat_completion
from tests.fakes.routing_config import upstream
from tests.fakes.upstream import answer_for, cut_after


def validate(payload: dict) -> None:
    if not isinstance(payload.get("model"), str):
        raise ApiError(400, "invalid_type", "model must be a string.", param="model")
    if not isinstance(payload.get("say"), str):
        raise ApiError(400, "invalid_type", "say must be a string.", param="say")


def upstream_body(payload: dict, route) -> bytes:
    return orjson.dumps(
        {
            "model": route.upstream_model,
            "stream": bool(payload.get("stream")),
            "messages": [{"role": "user", "content": payload["say"]}],
        }
    )


def answer(body: bytes, data: dict) -> bytes:
    return orjson.dumps({"echo": data["choices"][0]["message"]["content"]})


def render_error(error: ApiError) -> HttpResponse:
    body = {"type": "error", "error": {"type": error.code, "message": error.message}}
    return HttpResponse(orjson.dumps(body), status=error.status, content_type="application/json")


class EchoEvents:
    def event(self, payload: bytes) -> bytes:
        choices = orjson.loads(payload).get("choices") or [{}]
        text = (choices[0].get("delta") or {}).get("content") or ""
        return b"event: piece\ndata: " + orjson.dumps({"text": text}) + b"\n\n" if text else b""

    def done(self) -> bytes:
        return b"event: end\ndata: {}\n\n"

    def interrupted(self, reason: str) -> bytes:
        return b"event: failed\ndata: " + orjson.dumps({"reason": reason}) + b"\n\n"


ECHO = Operation(
    endpoint="completions",
    upstream_path=CHAT_PATH,
    validate=validate,
    upstream_body=upstream_body,
    check=is_chat_completion,
    usage=chat_usage,
    answer=answer,
    render_error=render_error,
    stream=StreamRules(first_event=is_valid_first_event, events=lambda payload: EchoEvents()),
)


@pytest.fixture
def echo(transactional_db, fake_upstream, make_routing, api_key):
    from routing import snapshot
    from usage import writer
    from usage.models import RequestLog

    make_routing(upstream(fake_upstream))
    _, key = api_key()
    snapshot.refresh()

    def call(body: dict):
        request = RequestFactory().post(
            "/v1/echo", data=orjson.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
        )

        async def run():
            try:
                response = await flow.serve(ECHO, request)
                if getattr(response, "streaming", False):
                    content = b"".join([piece async for piece in response.streaming_content])
                else:
                    content = response.content
                return response, content
            finally:
                await upstream_layer.close_client()  # this loop's pool, as a server's shutdown closes it

        response, content = asyncio.run(run())
        writer.flush()
        return response, content, RequestLog.objects.get(id=response["x-request-id"])

    call.fake = fake_upstream
    return call


def test_an_operation_answers_in_its_own_shape_and_logs_its_endpoint(echo):
    response, content, row = echo({"model": "rainymodel/auto", "say": "hello"})
    assert response.status_code == 200
    assert orjson.loads(content) == {"echo": answer_for([{"role": "user", "content": "hello"}])}
    assert echo.fake.requests[0].path.endswith("/chat/completions")
    assert (row.endpoint, row.status, [a["outcome"] for a in row.attempts]) == ("completions", 200, ["ok"])
    assert row.completion_tokens > 0


def test_an_operation_renders_its_errors_in_its_own_shape(echo):
    response, content, row = echo({"model": "rainymodel/auto", "say": 5})
    assert response.status_code == 400
    assert orjson.loads(content) == {
        "type": "error",
        "error": {"type": "invalid_type", "message": "say must be a string."},
    }
    assert response["x-request-id"] and (row.endpoint, row.error_code) == ("completions", "invalid_type")


def test_an_operation_streams_its_own_events(echo):
    _, content, row = echo({"model": "rainymodel/auto", "say": "hello", "stream": True})
    text = answer_for([{"role": "user", "content": "hello"}])
    pieces = [orjson.loads(line[6:])["text"] for line in content.split(b"\n") if line.startswith(b'data: {"text')]
    assert "".join(pieces) == text
    assert content.endswith(b"event: end\ndata: {}\n\n") and b"[DONE]" not in content
    assert (row.endpoint, row.status, row.stream) == ("completions", 200, True)


def test_a_broken_stream_ends_with_the_operations_failure_event(echo):
    echo.fake.script(cut_after(3))  # one route: nothing can continue the answer
    _, content, row = echo({"model": "rainymodel/auto", "say": "hello", "stream": True})
    assert content.count(b"event: piece") == 3
    assert content.endswith(b"event: failed\ndata: " + orjson.dumps({"reason": "reset"}) + b"\n\n")
    assert b"stream_interrupted" not in content and b"[DONE]" not in content
    assert (row.endpoint, row.status, row.error_code) == ("completions", 502, "stream_interrupted")
