"""apikeys/auth.py: the one API-key door of every /v1/ endpoint (`require_key`, `api_key_required`).

Keys are real rows made by apikeys.services and read through the snapshot, as on the request path; failed
attempts are counted in the (in-process) shared state."""

import asyncio
from datetime import timedelta

import orjson
import pytest
from django.test import RequestFactory
from django.utils import timezone

from apikeys.auth import api_key_required, require_key
from apikeys.services import apikey_create, apikey_revoke
from rainymodel_site.api_errors import ApiError
from routing import snapshot

pytestmark = pytest.mark.django_db(transaction=True)  # the catch-up for a new key reads the database on its thread

IP = "192.0.2.10"


def request(headers=None, ip=IP):
    return RequestFactory().get("/v1/models", headers=headers or {}, REMOTE_ADDR=ip)


def bearer(key):
    return request({"Authorization": f"Bearer {key}"})


def door(req):
    return asyncio.run(require_key(req))


def refused(req) -> ApiError:
    with pytest.raises(ApiError) as error:
        door(req)
    return error.value


@pytest.fixture
def live_key():
    api_key, full_key = apikey_create(name="live")
    snapshot.refresh()
    return api_key, full_key


def test_bearer_key_opens_the_door(live_key):
    api_key, full_key = live_key
    assert door(bearer(full_key)).id == api_key.id


def test_api_key_header_opens_the_door(live_key):
    api_key, full_key = live_key
    assert door(request({"api-key": full_key})).id == api_key.id


def test_the_key_is_kept_on_the_request(live_key):
    _, full_key = live_key
    req = bearer(full_key)
    first = door(req)
    assert req.api_key is first and door(req) is first


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"api-key": " "}]
)
def test_missing_key_is_401_invalid_api_key(headers):
    error = refused(request(headers))
    assert (error.status, error.code) == (401, "invalid_api_key")
    assert "Authorization: Bearer" in error.message


def test_unknown_key_is_401_after_one_catch_up(live_key):
    error = refused(bearer("rm-" + "x" * 40))
    assert (error.status, error.code) == (401, "invalid_api_key")


def test_wrong_secret_for_a_known_prefix_is_401(live_key):
    _, full_key = live_key
    error = refused(bearer(full_key[:-4] + ("aaaa" if not full_key.endswith("aaaa") else "bbbb")))
    assert (error.status, error.code) == (401, "invalid_api_key")


def test_revoked_key_is_401(live_key):
    api_key, full_key = live_key
    apikey_revoke(api_key=api_key)
    snapshot.refresh()
    error = refused(bearer(full_key))
    assert (error.status, error.code) == (401, "invalid_api_key")


def test_expired_key_is_401_key_expired():
    _, full_key = apikey_create(name="old", expires_at=timezone.now() - timedelta(minutes=1))
    snapshot.refresh()
    error = refused(bearer(full_key))
    assert (error.status, error.code) == (401, "key_expired")


def test_a_key_created_after_the_snapshot_works_at_once():
    snapshot.refresh()
    api_key, full_key = apikey_create(name="brand-new")
    assert door(bearer(full_key)).id == api_key.id


def test_master_key_opens_the_door(settings):
    settings.RAINYMODEL_MASTER_KEY = "master-secret-for-tests"
    assert door(bearer("master-secret-for-tests")).is_master


def test_failed_attempts_are_counted_per_ip(settings, live_key):
    settings.RAINYMODEL_AUTH_FAILURES_PER_MIN = 3
    wrong = {"Authorization": "Bearer rm-" + "y" * 40}
    for _ in range(3):
        assert refused(request(wrong)).status == 401
    error = refused(request(wrong))
    assert (error.status, error.code, error.type) == (429, "rate_limit_exceeded", "requests")  # as OpenAI says it
    assert int(error.headers["Retry-After"]) >= 1
    # Another address is still told why; a right key from the throttled address still gets in.
    assert refused(request(wrong, ip="192.0.2.11")).status == 401
    _, full_key = live_key
    assert door(bearer(full_key)).name == "live"


def test_decorated_view_answers_refusals_in_the_api_shape(live_key):
    seen = []

    @api_key_required
    def view(req):
        seen.append(req.api_key)
        return "served"

    response = view(request())
    assert response.status_code == 401
    assert orjson.loads(response.content)["error"]["code"] == "invalid_api_key"
    assert seen == []
    _, full_key = live_key
    assert view(bearer(full_key)) == "served" and seen[0].name == "live"


def test_decorated_async_view_gets_the_key(live_key):
    @api_key_required
    async def view(req):
        return req.api_key.name

    _, full_key = live_key
    assert asyncio.run(view(bearer(full_key))) == "live"
    assert asyncio.run(view(request())).status_code == 401


def test_x_api_key_header_opens_the_door(live_key):
    """The anthropic clients' header (issue 13), accepted on every /v1/ endpoint."""
    api_key, full_key = live_key
    assert door(request({"x-api-key": full_key})).id == api_key.id


def test_bearer_then_api_key_then_x_api_key(live_key):
    from apikeys.auth import presented_key

    assert presented_key({"authorization": "Bearer a", "api-key": "b", "x-api-key": "c"}) == "a"
    assert presented_key({"api-key": "b", "x-api-key": "c"}) == "b"
    assert presented_key({"api-key": " ", "x-api-key": "c"}) == "c"
    assert presented_key({"x-api-key": " "}) is None
    assert "x-api-key" in refused(request({"x-api-key": " "})).message
