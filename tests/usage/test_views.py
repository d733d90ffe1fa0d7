"""Usage pages: sign-in, who may see what (a plain user never sees another user's key or rows: 404), the request
log's filters and pagination, CSV exports, and clear 400s for bad parameters."""

from __future__ import annotations

import csv
import html
import io
import re
import warnings

import pytest

from tests.usage import sql

pytestmark = pytest.mark.django_db
PAGES = ("/usage/", "/usage/breakdown/", "/usage/keys/", "/usage/log/", "/usage/log.csv")


@pytest.mark.parametrize("url", PAGES)
def test_pages_send_anonymous_visitors_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_sign_in_with_a_django_account_leads_to_the_overview(client, users):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 302 and response["Location"] == "/usage/"
    assert client.get("/usage/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/usage/").status_code == 302


def test_a_plain_user_gets_404_for_another_users_key_page(client, traffic):
    client.force_login(traffic.alice)
    assert client.get(f"/usage/keys/{traffic.alice_keys[0].id}/").status_code == 200
    response = client.get(f"/usage/keys/{traffic.bob_key.id}/")
    assert response.status_code == 404
    assert traffic.bob_key.name.encode() not in response.content
    assert client.get("/usage/keys/999999/").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/usage/?key={bob}",
        "/usage/breakdown/?key={bob}",
        "/usage/log/?key={bob}",
        "/usage/log.csv?key={bob}",
        "/usage/log/?key=master",
    ],
)
def test_a_plain_user_filtering_by_someone_elses_key_gets_404(client, traffic, url):
    client.force_login(traffic.alice)
    assert client.get(url.format(bob=traffic.bob_key.id)).status_code == 404


def test_staff_may_open_any_key(client, traffic):
    client.force_login(traffic.staff)
    response = client.get(f"/usage/keys/{traffic.bob_key.id}/")
    assert response.status_code == 200
    assert b"bob-server" in response.content


def test_keys_page_lists_only_the_users_own_keys(client, traffic):
    client.force_login(traffic.alice)
    body = client.get("/usage/keys/").content.decode()
    assert "alice-laptop" in body and "alice-ci" in body
    assert "bob-server" not in body and traffic.bob_key.prefix not in body


def test_the_request_log_of_a_plain_user_holds_only_their_rows(client, traffic):
    client.force_login(traffic.bob)
    response = client.get("/usage/log/?period=30d")
    ids = set(re.findall(r'data-id="([^"]+)"', response.content.decode()))
    bobs = {r["id"] for r in traffic.rows if r["api_key_id"] == traffic.bob_key.id}
    assert ids and ids <= bobs


def _walk_log(client, url):
    """Follow "Older" links to the end; return every row id in order."""
    seen = []
    while True:
        body = client.get(url).content.decode()
        seen += re.findall(r'data-id="([^"]+)"', body)
        older = re.search(r'rel="next" href="\?([^"]+)"', body)
        if not older:
            return seen, body
        url = "/usage/log/?" + older.group(1).replace("&amp;", "&")


def test_request_log_pages_through_every_matching_row_once_newest_first(client, traffic):
    client.force_login(traffic.staff)
    seen, _ = _walk_log(client, "/usage/log/?period=30d")
    response = client.get("/usage/log/?period=30d")
    period = response.context["f"].period
    assert len(seen) == len(set(seen)) == sql.figures(period)["requests"]
    assert len(seen) > 50  # more than one page
    by_id = {r["id"]: r for r in traffic.rows}
    times = [by_id[i]["created_at"] for i in seen]
    assert times == sorted(times, reverse=True)


def test_request_log_newer_link_returns_to_the_previous_page(client, traffic):
    client.force_login(traffic.staff)
    first = client.get("/usage/log/?period=30d").content.decode()
    older = re.search(r'rel="next" href="\?([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get("/usage/log/?" + older).content.decode()
    newer = re.search(r'rel="prev" href="\?([^"]+)"', second).group(1).replace("&amp;", "&")
    back = client.get("/usage/log/?" + newer).content.decode()
    assert re.findall(r'data-id="([^"]+)"', back) == re.findall(r'data-id="([^"]+)"', first)


@pytest.mark.parametrize(
    "query, keep",
    [
        ("errors=1", lambda r: r["status"] >= 400),
        ("status=429", lambda r: r["status"] == 429),
        ("status=5xx", lambda r: 500 <= r["status"] < 600),
        ("tier=premium&alias=rainymodel/code", lambda r: r["tier"] == "premium" and r["alias"] == "rainymodel/code"),
        ("provider=hf", lambda r: r["provider"] == "hf"),
    ],
)
def test_request_log_filters_select_exactly_the_matching_rows(client, traffic, query, keep):
    client.force_login(traffic.staff)
    seen, _ = _walk_log(client, f"/usage/log/?period=30d&{query}")
    period = client.get("/usage/log/?period=30d").context["f"].period
    expected = {r["id"] for r in traffic.rows if period.start <= r["created_at"] < period.end and keep(r)}
    assert expected and set(seen) == expected


def _csv(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    assert response.is_async  # served from an async iterator: under ASGI it streams as it is read
    with warnings.catch_warnings():  # the sync test client consumes the async stream; that is what it warns about
        warnings.simplefilter("ignore")
        return list(csv.DictReader(io.StringIO(b"".join(response).decode())))


def test_log_csv_exports_the_filtered_view_row_for_row(client, traffic):
    client.force_login(traffic.staff)
    rows = _csv(client.get("/usage/log.csv?period=30d&errors=1"))
    period = client.get("/usage/log/?period=30d").context["f"].period
    expected = {r["id"]: r for r in traffic.rows if period.start <= r["created_at"] < period.end and r["status"] >= 400}
    assert {row["id"] for row in rows} == set(expected)
    sample = rows[0]
    assert int(sample["status"]) == expected[sample["id"]]["status"]
    assert sample["alias"] == expected[sample["id"]]["alias"]


def test_log_csv_of_a_plain_user_holds_only_their_rows(client, traffic):
    client.force_login(traffic.alice)
    rows = _csv(client.get("/usage/log.csv?period=30d"))
    alice_ids = {k.id for k in traffic.alice_keys}
    expected = {r["id"] for r in traffic.rows if r["api_key_id"] in alice_ids}
    assert rows and {row["id"] for row in rows} <= expected
    assert {row["key_name"] for row in rows} <= {"alice-laptop", "alice-ci"}


def test_breakdown_csv_matches_the_table(client, traffic):
    client.force_login(traffic.staff)
    rows = list(
        csv.DictReader(io.StringIO(client.get("/usage/breakdown/?by=alias&period=30d&format=csv").content.decode()))
    )
    table = client.get("/usage/breakdown/?by=alias&period=30d").context["table"]
    assert [(r["group"], int(r["requests"])) for r in rows] == [(t["label"], t["figures"].requests) for t in table]


@pytest.mark.parametrize(
    "url",
    [
        "/usage/?period=1y",
        "/usage/?period=custom&start=yesterday",
        "/usage/?start=2026-02-01&end=2026-01-01",
        "/usage/log/?status=abc",
        "/usage/log/?tier=gold",
        "/usage/?key=abc",
        "/usage/breakdown/?by=colour",
        "/usage/log/?before=garbage",
        "/usage/?start=2020-01-01&end=2026-01-01",
    ],
)
def test_bad_parameters_get_a_400_page_that_says_what_is_wrong(client, users, url):
    client.force_login(users[0])
    response = client.get(url)
    assert response.status_code == 400
    assert b"errornote" in response.content


def test_pages_render_for_a_user_with_no_keys_and_no_traffic(client, users):
    client.force_login(users[2])
    for url in ("/usage/", "/usage/breakdown/?by=key", "/usage/keys/", "/usage/log/"):
        assert client.get(url).status_code == 200


# The request log's rows open a page that explains the call.


def _explained_rows(api_key, now):
    """Rows as the proxy logs them for a refused request (400, 403, 429) and a call whose routes all failed."""
    from tests.usage.conftest import make_row

    rows = {
        "bad_body": make_row(
            created_at=now,
            api_key=api_key,
            alias="",
            policy="",
            tier="",
            status=400,
            error_code="invalid_type",
            prompt_tokens=0,
            completion_tokens=0,
        ),
        "forbidden": make_row(
            created_at=now,
            api_key=api_key,
            alias="rainymodel/code",
            tier="",
            status=403,
            error_code="model_not_allowed",
            prompt_tokens=0,
            completion_tokens=0,
        ),
        "quota": make_row(
            created_at=now,
            api_key=api_key,
            tier="",
            status=429,
            error_code="quota_exceeded",
            prompt_tokens=0,
            completion_tokens=0,
        ),
        "failed": make_row(
            created_at=now,
            api_key=api_key,
            tier="",
            status=502,
            error_code="all_upstreams_failed",
            prompt_tokens=0,
            completion_tokens=0,
        ),
        "answered": make_row(
            created_at=now,
            api_key=api_key,
            tier="premium",
            fallback=True,
            latency_ms=1234,
            prompt_tokens=1000,
            completion_tokens=500,
        ),
    }
    for row in rows.values():
        row["provider"] = row["upstream_model"] = "" if row["status"] >= 400 else row["provider"]
    rows["failed"]["attempts"] = [
        {"provider": "hf", "upstream_model": "llama-70b", "outcome": "http_502", "status": 502, "ms": 40},
        {
            "provider": "openrouter",
            "upstream_model": "gpt-4o-mini",
            "outcome": "timeout",
            "status": None,
            "ms": 30000,
            "detail": "read timeout",
        },
    ]
    rows["answered"]["attempts"] = [
        {"provider": "hf", "upstream_model": "llama-70b", "outcome": "http_429", "status": 429, "ms": 12},
        {"provider": "openrouter", "upstream_model": "gpt-4o-mini", "outcome": "ok", "status": 200, "ms": 1200},
    ]
    return rows


@pytest.fixture
def explained(traffic):
    from django.utils import timezone

    from tests.usage.conftest import write

    rows = _explained_rows(traffic.alice_keys[0], timezone.now())
    write(list(rows.values()))
    return rows


def test_the_request_log_shows_the_error_code_and_links_every_row_to_its_page(client, traffic, explained):
    client.force_login(traffic.staff)
    body = client.get("/usage/log/?period=24h").content.decode()
    assert '<th scope="col">Error code</th>' in body
    row = re.search(rf'<tr data-id="{explained["quota"]["id"]}".*?</tr>', body, re.S).group(0)
    assert '<td data-col="error-code"><code>quota_exceeded</code></td>' in row
    ids = re.findall(r'<tr data-id="([^"]+)"', body)
    links = re.findall(r'class="row-link" href="/usage/log/([^/]+)/\?', body)
    assert ids and links == ids


@pytest.mark.parametrize(
    ("name", "status", "code", "words"),
    [
        ("bad_body", 400, "invalid_type", "'messages' not a list of objects"),
        ("forbidden", 403, "model_not_allowed", "restricted to other aliases"),
        ("quota", 429, "quota_exceeded", "quota (requests, tokens or cost) was used up"),
        ("failed", 502, "all_upstreams_failed", "Every route in the chain was tried and failed"),
    ],
)
def test_a_failed_row_explains_itself(client, traffic, explained, name, status, code, words):
    client.force_login(traffic.alice)
    response = client.get(f"/usage/log/{explained[name]['id']}/")
    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    assert f'data-field="status">{status}<' in body
    assert f'data-field="error-code">{code}<' in body
    assert words in body
    assert "alice-laptop" in body


def test_a_row_page_shows_route_figures_and_each_attempt_with_its_outcome(client, traffic, explained):
    client.force_login(traffic.staff)
    body = client.get(f"/usage/log/{explained['answered']['id']}/?period=24h").content.decode()
    assert 'data-field="alias">rainymodel/auto<' in body
    assert 'data-field="policy">auto<' in body
    assert "openrouter / gpt-4o-mini" in body
    assert 'data-field="latency">1.23 s<' in body
    assert 'data-field="tokens">1,500 (1,000 in · 500 out)' in body
    assert 'data-field="cost">$0.000450<' in body  # 1000 × $0.15/M + 500 × $0.60/M
    assert "the upstream was rate-limiting: HTTP 429" in body and ">answered<" in body
    assert 'href="/usage/log/?period=24h"' in body  # back to the log with the same filters
    failed = client.get(f"/usage/log/{explained['failed']['id']}/").content.decode()
    assert "upstream gateway error: HTTP 502 (retried)" in failed
    assert "no answer within the route&#x27;s timeout (moved on)" in failed and "read timeout" in failed


def test_a_plain_user_gets_404_for_a_row_of_someone_elses_key(client, traffic):
    bobs = next(r for r in traffic.rows if r["api_key_id"] == traffic.bob_key.id)
    master = next(r for r in traffic.rows if r["key_prefix"] == "master")
    anonymous = next(r for r in traffic.rows if r["key_prefix"] == "")
    client.force_login(traffic.alice)
    for row in (bobs, master, anonymous):
        response = client.get(f"/usage/log/{row['id']}/")
        assert response.status_code == 404
        assert row["id"].encode() not in response.content
    assert client.get("/usage/log/no-such-request/").status_code == 404
    client.force_login(traffic.staff)
    for row in (bobs, master, anonymous):
        assert client.get(f"/usage/log/{row['id']}/").status_code == 200


def test_a_row_page_needs_sign_in(client, traffic):
    response = client.get(f"/usage/log/{traffic.rows[0]['id']}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_period_whose_requests_cost_nothing_says_so(client, traffic):
    from django.utils import timezone

    from tests.usage.conftest import make_row, write

    client.force_login(traffic.alice)
    write([make_row(created_at=timezone.now(), api_key=traffic.alice_keys[1], tier="free") for _ in range(3)])
    body = client.get(f"/usage/keys/{traffic.alice_keys[1].id}/?period=24h&tier=free").content.decode()
    requests = client.get(f"/usage/keys/{traffic.alice_keys[1].id}/?period=24h&tier=free").context["totals"].requests
    assert requests >= 3
    assert f"Cost was $0 for the {requests:,} requests in this period" in body
    assert "No requests in this period" not in body


def test_the_header_names_a_user_by_full_name_then_email(client, users):
    """Users signed in through Orcest Login have an opaque username (`orcest:<sub>`): show who they are instead."""
    _, alice, _ = users
    client.force_login(alice)
    alice.first_name, alice.last_name, alice.email = "", "", "alice@example.com"
    alice.save()
    assert "<strong>alice@example.com</strong>" in client.get("/usage/").content.decode()
    alice.first_name, alice.last_name = "Alice", "Liddell"
    alice.save()
    assert "<strong>Alice Liddell</strong>" in client.get("/usage/").content.decode()
