"""Rotation over a real RainyModel process with the openai SDK: after `apikey_rotate` the new secret works, the old
one keeps working until its (injected, short) grace ends, then gets 401 — as the server's own snapshot sees it."""

from __future__ import annotations

import time
from datetime import timedelta

import openai
import pytest

from apikeys.services import apikey_create, apikey_rotate
from tests.fakes.routing_config import upstream

GRACE = timedelta(seconds=4)


def _works(server, key) -> bool:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        client.models.list()
    except openai.AuthenticationError:
        return False
    return True


def _eventually(check, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.mark.django_db(transaction=True)
def test_the_old_secret_works_until_the_grace_ends_then_401(fake_upstream, make_routing, rainymodel_server):
    make_routing(upstream(fake_upstream))
    api_key, old = apikey_create(name="rotating")
    server = rainymodel_server()
    assert _works(server, old)
    rotated, new = apikey_rotate(api_key=api_key, grace=GRACE)
    assert _eventually(lambda: _works(server, new)), "the new secret never worked"
    assert time.time() < rotated.previous_valid_until.timestamp() - 0.5, "too slow to test the grace"
    assert _works(server, old), "the old secret was refused inside its grace"
    time.sleep(max(0.0, rotated.previous_valid_until.timestamp() - time.time()) + 0.1)
    assert not _works(server, old), "the old secret still works after its grace"
    assert _works(server, new)
    answer = openai.OpenAI(base_url=server.url + "/v1", api_key=new, max_retries=0).chat.completions.create(
        model="rainymodel/auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
