"""RequestLog.endpoint: written for every call, rolled up as a dimension, and a filter / breakdown / group on every
usage surface (pages, both CSV exports, /v1/usage). Quotas count every endpoint's tokens."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum
from django.test import RequestFactory
from django.utils import timezone

import limits
from routing import snapshot
from routing.snapshot import KeyInfo, QuotaInfo
from tests.usage.conftest import make_row, write
from usage.filters import FilterError, parse_filters
from usage.models import RequestLog, UsageDaily, UsageHourly

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed(users, api_key):
    """bob's key: 3 chat calls, 2 embeddings calls (no completion tokens), 1 completions call, in the last hour."""
    _staff, _alice, bob = users
    key, secret = api_key(name="bob-server", owner=bob)
    now = timezone.now() - timedelta(minutes=5)
    rows = (
        [make_row(created_at=now, api_key=key, prompt_tokens=100, completion_tokens=50) for _ in range(3)]
        + [
            make_row(created_at=now, api_key=key, endpoint="embeddings", prompt_tokens=400, completion_tokens=0)
            for _ in range(2)
        ]
        + [make_row(created_at=now, api_key=key, endpoint="completions", prompt_tokens=20, completion_tokens=30)]
    )
    write(rows)
    return key, secret


def test_a_row_written_without_an_endpoint_is_a_chat_row(users, api_key):
    row = make_row(created_at=timezone.now())
    del row["endpoint"]
    write([row])
    assert RequestLog.objects.get(id=row["id"]).endpoint == "chat"
    assert list(UsageHourly.objects.values_list("endpoint", flat=True)) == ["chat"]
    empty = make_row(created_at=timezone.now(), endpoint="")
    write([empty])
    assert RequestLog.objects.get(id=empty["id"]).endpoint == "chat"
    assert list(UsageHourly.objects.values_list("endpoint", flat=True)) == ["chat"]


def test_the_rollups_keep_endpoints_apart(mixed):
    for model in (UsageHourly, UsageDaily):
        per_endpoint = dict(model.objects.values_list("endpoint").annotate(n=Sum("requests")))
        assert per_endpoint == {"chat": 3, "embeddings": 2, "completions": 1}
    tokens = UsageHourly.objects.filter(endpoint="embeddings").aggregate(p=Sum("prompt_tokens"))["p"]
    assert tokens == 800


def test_a_call_logs_its_endpoint(transactional_db, settings):
    from routing.proxy.flow import Call
    from usage import writer

    call = Call.begin(RequestFactory().post("/v1/embeddings", HTTP_USER_AGENT="test"))
    call.endpoint = "embeddings"
    asyncio.run(call.finish(400, "invalid_type"))
    writer.flush()
    assert RequestLog.objects.get(id=call.request_id).endpoint == "embeddings"


def test_the_endpoint_filter_is_parsed_and_checked(users):
    staff = users[0]
    assert parse_filters({"endpoint": "embeddings"}, staff).endpoint == "embeddings"
    assert parse_filters({}, staff).endpoint == ""
    assert ("endpoint", "embeddings") in parse_filters({"endpoint": "embeddings"}, staff).query_items()
    with pytest.raises(FilterError) as error:
        parse_filters({"endpoint": "images"}, staff)
    assert error.value.param == "endpoint" and "chat" in error.value.message


def test_the_breakdown_by_endpoint_and_its_csv(client, users, mixed):
    client.force_login(users[0])
    page = client.get("/usage/breakdown/?by=endpoint&period=24h")
    assert page.status_code == 200
    html = page.content.decode()
    for endpoint in ("chat", "embeddings", "completions"):
        assert f'data-group="{endpoint}"' in html
    rows = list(
        csv.DictReader(io.StringIO(client.get("/usage/breakdown/?by=endpoint&period=24h&format=csv").content.decode()))
    )
    assert {r["group"]: (int(r["requests"]), int(r["total_tokens"])) for r in rows} == {
        "chat": (3, 450),
        "embeddings": (2, 800),
        "completions": (1, 50),
    }
    narrowed = client.get("/usage/breakdown/?by=alias&period=24h&endpoint=embeddings&format=csv").content.decode()
    assert [(r["group"], r["requests"]) for r in csv.DictReader(io.StringIO(narrowed))] == [("rainymodel/auto", "2")]


def test_the_log_filters_by_endpoint_and_shows_it(client, users, mixed):
    client.force_login(users[0])
    html = client.get("/usage/log/?period=24h&endpoint=embeddings").content.decode()
    assert html.count('data-col="endpoint">embeddings<') == 2
    assert 'data-col="endpoint">chat<' not in html
    assert client.get("/usage/log/?endpoint=nope").status_code == 400
    row = RequestLog.objects.filter(endpoint="completions").get()
    assert 'data-field="endpoint"><code>completions</code>' in client.get(f"/usage/log/{row.id}/").content.decode()


def _log_csv(client, query: str) -> str:
    with warnings.catch_warnings():  # the test client reads an async streaming body synchronously
        warnings.simplefilter("ignore")
        return b"".join(client.get("/usage/log.csv?" + query)).decode()


def test_the_log_csv_has_an_endpoint_column(client, users, mixed):
    client.force_login(users[0])
    rows = list(csv.DictReader(io.StringIO(_log_csv(client, "period=24h&endpoint=completions"))))
    assert [r["endpoint"] for r in rows] == ["completions"]
    everything = _log_csv(client, "period=24h")
    counts = {
        k: len(list(g))
        for k, g in itertools.groupby(sorted(r["endpoint"] for r in csv.DictReader(io.StringIO(everything))))
    }
    assert counts == {"chat": 3, "completions": 1, "embeddings": 2}


def test_v1_usage_groups_by_endpoint(client, mixed):
    _key, secret = mixed
    snapshot.refresh()
    response = client.get("/v1/usage?period=30d&group_by=endpoint", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    body = response.json()
    assert {g["group"]: g["total_tokens"] for g in body["data"]} == {"chat": 450, "embeddings": 800, "completions": 50}
    assert body["total"]["requests"] == 6


def test_an_embeddings_row_counts_toward_the_keys_token_quota(transactional_db, users, api_key):
    """The limiter rebuilds a key's quota counters from RequestLog (e.g. after the shared state was flushed):
    embeddings tokens are tokens like any other."""
    key, _secret = api_key(name="rag-app", owner=users[2])
    write(
        [
            make_row(
                created_at=datetime.now(UTC),
                api_key=key,
                endpoint="embeddings",
                prompt_tokens=1000,
                completion_tokens=0,
            )
        ]
    )
    start, end = limits.period_bounds("day", datetime.now(UTC))
    assert limits.usage_from_log_sync(key.id, start, end)["tokens"] == 1000
    info = KeyInfo(
        id=key.id,
        name="rag-app",
        prefix=key.prefix,
        hashed_key="",
        expires_at=None,
        revoked=False,
        allowed_aliases=frozenset(),
        allowed_policies=frozenset(),
        default_policy=None,
        rpm_limit=None,
        tpm_limit=None,
        max_concurrent=None,
        quotas=(QuotaInfo(period="day", max_requests=None, max_tokens=1000, max_cost_usd=None),),
    )
    with pytest.raises(limits.LimitExceeded) as refused:
        asyncio.run(limits.admit(info, estimated_tokens=1))
    assert refused.value.code == "quota_exceeded"
