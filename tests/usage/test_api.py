"""`GET /v1/usage`: a key's own usage as JSON, OpenAI-shaped errors for bad keys and parameters."""

from __future__ import annotations

import pytest

from routing import snapshot
from tests.usage import sql
from usage.filters import parse_period

pytestmark = pytest.mark.django_db


@pytest.fixture
def keys(traffic):
    """bob's full key string, with the snapshot rebuilt so authentication knows the key."""
    snapshot.refresh()
    return traffic.bob_secret


def _get(client, url, key):
    return client.get(url, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_usage_without_a_key_is_401_openai_shaped(client, db):
    snapshot.refresh()
    response = client.get("/v1/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_usage_with_a_wrong_key_is_401(client, traffic):
    snapshot.refresh()
    response = _get(client, "/v1/usage", "rm-" + "x" * 40)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_usage_totals_are_the_keys_own_rows_only(client, traffic, keys):
    response = _get(client, "/v1/usage?start=2000-01-01", keys)
    assert response.status_code == 400  # more than 400 days
    body = _get(client, "/v1/usage?period=30d", keys).json()
    period = parse_period({"period": "30d"})
    expected = sql.figures(period, ["api_key_id = %s"], [traffic.bob_key.id])
    assert body["object"] == "usage" and body["key"]["name"] == "bob-server"
    assert body["total"]["requests"] == expected["requests"] > 0
    assert body["total"]["total_tokens"] == expected["total_tokens"]
    assert body["total"]["errors"] == expected["errors"]
    assert body["total"]["cost_usd"] == pytest.approx(expected["cost_usd"], abs=1e-6)
    assert body["data"] == []
    default = _get(client, "/v1/usage", keys).json()  # the default period is the last 30 days
    assert default["total"] == body["total"]


@pytest.mark.parametrize("group_by, group_sql", [("alias", "alias"), ("tier", "tier"), ("provider", "provider")])
def test_usage_group_by_agrees_with_group_by_sql(client, traffic, keys, group_by, group_sql):
    body = _get(client, f"/v1/usage?period=30d&group_by={group_by}", keys).json()
    expected = sql.grouped(parse_period({"period": "30d"}), group_sql, ["api_key_id = %s"], [traffic.bob_key.id])
    assert {row["group"]: row["requests"] for row in body["data"]} == {k: v["requests"] for k, v in expected.items()}


def test_usage_group_by_day_covers_the_custom_range(client, traffic, keys):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    start = today - timedelta(days=10)
    body = _get(client, f"/v1/usage?start={start}&end={today}&group_by=day", keys).json()
    assert body["start"] == f"{start}T00:00:00Z" and body["end"] == f"{today + timedelta(days=1)}T00:00:00Z"
    assert sum(row["requests"] for row in body["data"]) == body["total"]["requests"]
    assert all(row["group"].endswith("T00:00:00Z") for row in body["data"])


@pytest.mark.parametrize(
    "query, param",
    [
        ("group_by=colour", "group_by"),
        ("start=tomorrow", "start"),
        ("start=2026-02-02&end=2026-02-01", "end"),
        ("period=1y", "period"),
    ],
)
def test_usage_with_bad_parameters_is_400_naming_the_parameter(client, traffic, keys, query, param):
    response = _get(client, f"/v1/usage?{query}", keys)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_usage_rejects_post_with_405(client, traffic, keys):
    response = client.post("/v1/usage", headers={"Authorization": f"Bearer {keys}"})
    assert response.status_code == 405


@pytest.mark.django_db(transaction=True)
def test_usage_answers_over_a_real_socket_from_the_asgi_server(traffic, rainymodel_server):
    """/v1/ runs through the project's own API handler in production; the endpoint must work there too."""
    import httpx

    server = rainymodel_server()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):  # repeated calls reuse the worker's database connection safely
            response = client.get(
                "/v1/usage?period=30d&group_by=tier", headers={"Authorization": f"Bearer {traffic.bob_secret}"}
            )
            assert response.status_code == 200, response.text
        assert client.get("/v1/usage").status_code == 401
    expected = sql.figures(parse_period({"period": "30d"}), ["api_key_id = %s"], [traffic.bob_key.id])
    assert response.json()["total"]["requests"] == expected["requests"]
