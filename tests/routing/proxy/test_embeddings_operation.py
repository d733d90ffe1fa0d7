"""The embeddings operation's pure parts (routing/proxy/operations/embeddings.py), without a server."""

import pytest

from routing.proxy.operations.embeddings import EMBEDDINGS, check, usage, validate_embeddings
from routing.proxy.validation import InvalidRequest


@pytest.mark.parametrize(
    "data",
    [
        {"object": "list", "data": [{"embedding": [0.1, -2, 3.5]}]},
        {"data": [{"embedding": "AAAAPw=="}, {"embedding": [1.0]}]},
    ],
)
def test_check_accepts_embedding_lists(data):
    assert check(data) is None


@pytest.mark.parametrize(
    "data",
    [
        {"object": "list", "data": []},
        {"choices": [{"message": {"content": "hi"}}]},
        {"error": {"message": "no"}},
        {"data": [{"embedding": []}]},
        {"data": [{"embedding": ""}]},
        {"data": [{"embedding": [[0.1]]}]},
        {"data": [{"embedding": [True]}]},
        {"data": [{"embedding": None}]},
        {"data": ["0.1"]},
        {"data": {"embedding": [0.1]}},
    ],
)
def test_check_refuses_anything_else(data):
    assert check(data)


def test_usage_is_prompt_tokens_and_no_completion():
    assert usage({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == (7, 0, 0)
    assert usage({}) == (None, 0, 0)
    assert usage({"usage": {"prompt_tokens": "7"}}) == (None, 0, 0)
    assert usage({"usage": {"prompt_tokens": -1}}) == (None, 0, 0)


def test_the_operation_names_its_endpoint_and_path_and_does_not_stream():
    assert (EMBEDDINGS.endpoint, EMBEDDINGS.upstream_path, EMBEDDINGS.stream) == ("embeddings", "/embeddings", None)


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "m", "input": "x"},
        {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256, "user": "u"},
        {"model": "m", "input": [0, 2**31 - 1]},
        {"model": "m", "input": [[1], [2, 3]], "stream": False, "encoding_format": None, "dimensions": None},
        {"model": "m", "input": ["x"] * 2048},
    ],
)
def test_valid_bodies_pass(payload):
    validate_embeddings(payload)


def test_a_bad_body_names_its_param():
    with pytest.raises(InvalidRequest) as bad:
        validate_embeddings({"model": "m", "input": [[1, 2], [3, -4]]})
    assert (bad.value.status, bad.value.code, bad.value.param) == (400, "integer_below_min_value", "input[1][1]")
