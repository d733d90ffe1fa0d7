"""The fake upstream does what each behaviour says, over real sockets (tests/fakes/upstream.py)."""

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.fakes.server import PROJECT_ROOT, free_port
from tests.fakes.upstream import (
    FakeUpstream,
    answer_for,
    content_filter,
    context_length_exceeded,
    continue_prefill,
    cut_after,
    first_token_delay,
    hang,
    invalid_completion,
    malformed_event,
    no_done,
    no_usage,
    ok,
    reject_prefill,
    reset,
    stall_after,
    status,
)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me a story"}]


def chat(fake, stream=False, include_usage=False, messages=MESSAGES, model="m-1"):
    body = {"model": model, "messages": messages}
    if stream:
        body["stream"] = True
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def post(fake, body, timeout=5.0, headers=None):
    return httpx.post(fake.base_url + "/chat/completions", json=body, timeout=timeout, headers=headers)


def sse_data(lines):
    """The `data:` payloads of an SSE stream, in order."""
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def stream_events(fake, body, timeout=5.0):
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=body, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_data(list(response.iter_lines()))


def content_of(events):
    text = ""
    for data in events:
        if data == "[DONE]":
            continue
        event = json.loads(data)
        for choice in event["choices"]:
            text += choice["delta"].get("content") or ""
    return text


@pytest.fixture
def fake():
    with FakeUpstream() as fake:
        yield fake


# --- answers ------------------------------------------------------------------------------------------------------


def test_answer_is_deterministic_and_longer_answers_extend_shorter_ones():
    assert answer_for(MESSAGES, 20) == answer_for(list(MESSAGES), 20)
    assert answer_for(MESSAGES, 50).startswith(answer_for(MESSAGES, 20) + " ")
    assert len(answer_for(MESSAGES, 7).split()) == 7
    other = [{"role": "user", "content": "something else"}]
    assert answer_for(other, 20) != answer_for(MESSAGES, 20)


def test_answer_is_seeded_by_the_last_user_message_only():
    with_prefill = MESSAGES + [{"role": "assistant", "content": "Once"}]
    assert answer_for(with_prefill, 10) == answer_for(MESSAGES, 10)


def test_non_stream_ok_returns_a_chat_completion_with_usage(fake):
    response = post(fake, chat(fake))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": answer_for(MESSAGES, 20), "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 20
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 20


def test_stream_ok_sends_openai_chunks_then_usage_when_asked_then_done(fake):
    fake.script(ok(tokens=5))
    events = stream_events(fake, chat(fake, stream=True, include_usage=True))
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "m-1" for e in parsed)
    assert len({e["id"] for e in parsed}) == 1
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [e["choices"][0]["finish_reason"] for e in parsed[:-1]] == [None] * 6 + ["stop"]
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["completion_tokens"] == 5
    assert content_of(events) == answer_for(MESSAGES, 5)


def test_stream_without_include_usage_has_no_usage_chunk(fake):
    events = stream_events(fake, chat(fake, stream=True))
    parsed = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in e for e in parsed)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_token_delay_spaces_the_chunks(fake):
    fake.script(ok(tokens=6, token_delay=0.05))
    started = time.monotonic()
    events = stream_events(fake, chat(fake, stream=True))
    assert time.monotonic() - started >= 0.25
    assert content_of(events) == answer_for(MESSAGES, 6)


def test_close_delimited_stream_ends_by_closing_the_connection(fake):
    fake.script(ok(tokens=3, framing="close"))
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=chat(fake, stream=True)) as response:
        assert "content-length" not in response.headers
        assert "transfer-encoding" not in response.headers
        events = sse_data(list(response.iter_lines()))
    assert events[-1] == "[DONE]"
    assert content_of(events) == answer_for(MESSAGES, 3)


def test_models_lists_the_fake_models(fake):
    fake.models = ["a", "b"]
    body = httpx.get(fake.base_url + "/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a", "b"]


# --- recording, scripting, keep-alive -----------------------------------------------------------------------------


def test_requests_are_recorded_with_headers_and_parsed_body(fake):
    body = chat(fake, stream=True, include_usage=True)
    body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    stream_events(fake, body)
    httpx.get(fake.base_url + "/models", headers={"Authorization": "Bearer sk-x"})
    assert len(fake.requests) == 2
    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.body == body
    assert first.headers["content-type"] == "application/json"
    assert (second.method, second.path, second.headers["authorization"]) == ("GET", "/v1/models", "Bearer sk-x")
    assert fake.requests.chat() == [first]


def test_script_is_consumed_in_order_then_default_applies(fake):
    fake.script(status(500), status(502))
    fake.default = status(418)
    codes = [post(fake, chat(fake)).status_code for _ in range(4)]
    assert codes == [500, 502, 418, 418]
    assert fake.pending() == 0


def test_script_rejects_things_that_are_not_behaviours(fake):
    with pytest.raises(TypeError):
        fake.script("ok")


def test_connections_are_kept_alive_between_requests(fake):
    with httpx.Client(base_url=fake.base_url) as client:
        for _ in range(3):
            assert client.post("/chat/completions", json=chat(fake)).status_code == 200
        with client.stream("POST", "/chat/completions", json=chat(fake, stream=True)) as response:
            response.read()
        assert client.post("/chat/completions", json=chat(fake)).status_code == 200
    assert fake.connections_opened == 1


def test_api_key_is_enforced_when_set():
    with FakeUpstream(api_key="sk-right") as fake:
        wrong = post(fake, chat(fake), headers={"Authorization": "Bearer sk-wrong"})
        right = post(fake, chat(fake), headers={"Authorization": "Bearer sk-right"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


def test_unknown_path_gets_an_openai_shaped_404(fake):
    response = httpx.get(fake.base_url + "/nope")
    assert response.status_code == 404
    assert "message" in response.json()["error"]


# --- failures -----------------------------------------------------------------------------------------------------


def test_status_sends_the_code_retry_after_and_openai_error(fake):
    fake.script(status(429, retry_after=2, code="rate_limit_exceeded", message="slow down"), status(503))
    response = post(fake, chat(fake, stream=True))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] == {
        "message": "slow down",
        "type": "invalid_request_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    response = post(fake, chat(fake))
    assert response.status_code == 503 and "retry-after" not in response.headers
    assert response.json()["error"]["type"] == "server_error"


def test_reset_closes_the_connection_before_any_response_byte(fake):
    fake.script(reset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(fake, chat(fake))
    assert len(fake.requests) == 1


def test_hang_never_answers_and_notices_when_the_client_leaves(fake):
    fake.script(hang())
    with pytest.raises(httpx.ReadTimeout):
        post(fake, chat(fake), timeout=0.3)
    assert fake.requests[0].client_closed.wait(2)


def test_first_token_delay_sends_headers_then_waits_before_the_first_event(fake):
    fake.script(first_token_delay(0.4, tokens=3))
    started = time.monotonic()
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=chat(fake, stream=True)) as response:
        headers_after = time.monotonic() - started
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_after = time.monotonic() - started
        rest = sse_data(list(lines))
    assert headers_after < 0.3
    assert first_after >= 0.4
    assert content_of([first[6:]] + rest) == answer_for(MESSAGES, 3)


def test_first_token_delay_delays_a_non_stream_reply(fake):
    fake.script(first_token_delay(0.3))
    started = time.monotonic()
    assert post(fake, chat(fake)).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_stall_after_streams_n_chunks_then_goes_silent_with_the_socket_open(fake):
    fake.script(stall_after(2, tokens=10))
    received = []
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream(
            "POST",
            fake.base_url + "/chat/completions",
            json=chat(fake, stream=True),
            timeout=httpx.Timeout(5.0, read=0.4),
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert content_of(received) == " ".join(answer_for(MESSAGES, 10).split()[:2])
    assert fake.requests[0].client_closed.wait(2)


def test_cut_after_streams_n_chunks_then_breaks_the_connection(fake):
    fake.script(cut_after(3, tokens=10))
    received = []
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        with httpx.stream("POST", fake.base_url + "/chat/completions", json=chat(fake, stream=True)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert content_of(received) == " ".join(answer_for(MESSAGES, 10).split()[:3])
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in received)


def test_malformed_event_inserts_one_non_json_event(fake):
    fake.script(malformed_event(after=2, tokens=4))
    events = stream_events(fake, chat(fake, stream=True))
    bad = []
    for index, data in enumerate(events):
        try:
            json.loads(data) if data != "[DONE]" else None
        except ValueError:
            bad.append(index)
    assert bad == [3]  # role chunk, two content chunks, then the bad one
    good = [e for i, e in enumerate(events) if i not in bad]
    assert content_of(good) == answer_for(MESSAGES, 4)
    assert events[-1] == "[DONE]"


def test_no_done_ends_the_stream_after_finish_and_usage_without_done(fake):
    fake.script(no_done(tokens=3))
    events = stream_events(fake, chat(fake, stream=True, include_usage=True))
    assert "[DONE]" not in events
    assert json.loads(events[-1])["usage"]["completion_tokens"] == 3
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


def test_no_usage_omits_usage_from_body_and_stream(fake):
    fake.script(no_usage(), no_usage())
    assert "usage" not in post(fake, chat(fake)).json()
    events = stream_events(fake, chat(fake, stream=True, include_usage=True))
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert events[-1] == "[DONE]"


def test_context_length_exceeded_is_a_400_with_openai_code(fake):
    fake.script(context_length_exceeded())
    response = post(fake, chat(fake, stream=True))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_content_filter_is_a_400_content_policy_error(fake):
    fake.script(content_filter())
    response = post(fake, chat(fake))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_filter"
    assert "content management policy" in response.json()["error"]["message"]


def test_invalid_completion_is_a_200_that_is_not_a_completion(fake):
    fake.script(invalid_completion(), invalid_completion())
    response = post(fake, chat(fake))
    assert response.status_code == 200 and "choices" not in response.json()
    response = post(fake, chat(fake, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


# --- prefill ------------------------------------------------------------------------------------------------------


def test_reject_prefill_refuses_a_trailing_assistant_message_only(fake):
    fake.script(reject_prefill(), reject_prefill())
    prefill = MESSAGES + [{"role": "assistant", "content": "Once upon"}]
    rejected = post(fake, chat(fake, messages=prefill))
    assert rejected.status_code == 400 and rejected.json()["error"]["param"] == "messages"
    assert post(fake, chat(fake)).status_code == 200


def test_continue_prefill_answers_with_the_rest_of_the_answer(fake):
    full = answer_for(MESSAGES, 12)
    delivered = full[: len(" ".join(full.split()[:4])) + 3]  # four words and part of the fifth
    fake.script(continue_prefill(tokens=12), continue_prefill(tokens=12))
    prefill = MESSAGES + [{"role": "assistant", "content": delivered}]
    events = stream_events(fake, chat(fake, stream=True, include_usage=True, messages=prefill))
    assert delivered + content_of(events) == full
    body = post(fake, chat(fake, messages=prefill)).json()
    assert delivered + body["choices"][0]["message"]["content"] == full


def test_continue_prefill_without_a_prefill_answers_normally(fake):
    fake.script(continue_prefill(tokens=5))
    assert content_of(stream_events(fake, chat(fake, stream=True))) == answer_for(MESSAGES, 5)


def test_behaviours_compose(fake):
    fake.script(stall_after(1, tokens=5).but(role_chunk=False), ok(tokens=2).but(usage=False))
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream(
            "POST",
            fake.base_url + "/chat/completions",
            json=chat(fake, stream=True),
            timeout=httpx.Timeout(5.0, read=0.3),
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert "role" not in json.loads(first[6:])["choices"][0]["delta"]
            list(lines)
    assert "usage" not in post(fake, chat(fake)).json()


# --- standalone ---------------------------------------------------------------------------------------------------


def test_runs_standalone_as_a_process_for_benchmarks():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port), "--tokens", "4"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "listening" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = httpx.post(url, json={"model": "x", "messages": MESSAGES}).json()
        assert body["choices"][0]["message"]["content"] == answer_for(MESSAGES, 4)
    finally:
        process.terminate()
        process.wait(5)


def test_refuses_to_listen_beyond_loopback():
    with pytest.raises(ValueError):
        FakeUpstream(host="0.0.0.0")


def test_cut_after_on_a_close_delimited_stream_ends_cleanly_but_without_finish_or_done(fake):
    fake.script(cut_after(2, tokens=10, framing="close"))
    events = stream_events(fake, chat(fake, stream=True))
    assert "[DONE]" not in events
    assert content_of(events) == " ".join(answer_for(MESSAGES, 10).split()[:2])
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events)


# --- POST /v1/completions (legacy text completions) ---------------------------------------------------------------


def test_completions_answer_text_seeded_by_prompt_and_suffix(fake):
    from tests.fakes.upstream import completion_answer_for

    r = httpx.post(fake.base_url + "/completions", json={"model": "m", "prompt": "def f(", "suffix": "):"}, timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion" and body["fake_suffix_received"] is True
    assert body["choices"][0]["text"] == completion_answer_for("def f(", "):") != completion_answer_for("def f(")
    assert body["usage"]["completion_tokens"] == 20
    assert fake.requests.completions()[0].body["suffix"] == "):" and fake.requests.chat() == []


def test_completions_stream_text_chunks_usage_and_done(fake):
    from tests.fakes.upstream import completion_answer_for

    body = {"model": "m", "prompt": "p", "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", fake.base_url + "/completions", json=body, timeout=5) as response:
        events = sse_data(list(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == completion_answer_for("p")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 20


def test_completions_follow_the_scripted_behaviours(fake):
    from tests.fakes.upstream import reject_suffix

    fake.script(status(503), reject_suffix(), reject_suffix())
    url = fake.base_url + "/completions"
    assert httpx.post(url, json={"model": "m", "prompt": "p"}, timeout=5).status_code == 503
    refused = httpx.post(url, json={"model": "m", "prompt": "p", "suffix": "s"}, timeout=5)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "suffix"
    assert httpx.post(url, json={"model": "m", "prompt": "p"}, timeout=5).status_code == 200  # no suffix: fine
    fake.script(cut_after(2))
    with httpx.stream("POST", url, json={"model": "m", "prompt": "p", "stream": True}, timeout=5) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            list(response.iter_lines())
