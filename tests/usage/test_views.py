"""Usage pages: sign-in, who may see what (a plain user never sees another user's key or rows: 404), the request
log's filters and pagination, CSV exports, and clear 400s for bad parameters."""

from __future__ import annotations

import csv
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


@pytest.mark.parametrize("url", ["/usage/?key={bob}", "/usage/breakdown/?key={bob}", "/usage/log/?key={bob}",
                                 "/usage/log.csv?key={bob}", "/usage/log/?key=master"])
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


@pytest.mark.parametrize("query, keep", [
    ("errors=1", lambda r: r["status"] >= 400),
    ("status=429", lambda r: r["status"] == 429),
    ("status=5xx", lambda r: 500 <= r["status"] < 600),
    ("tier=premium&alias=rainymodel/code", lambda r: r["tier"] == "premium" and r["alias"] == "rainymodel/code"),
    ("provider=hf", lambda r: r["provider"] == "hf"),
])
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
    rows = list(csv.DictReader(io.StringIO(client.get("/usage/breakdown/?by=alias&period=30d&format=csv")
                                           .content.decode())))
    table = client.get("/usage/breakdown/?by=alias&period=30d").context["table"]
    assert [(r["group"], int(r["requests"])) for r in rows] == [(t["label"], t["figures"].requests) for t in table]


@pytest.mark.parametrize("url", [
    "/usage/?period=1y", "/usage/?period=custom&start=yesterday", "/usage/?start=2026-02-01&end=2026-01-01",
    "/usage/log/?status=abc", "/usage/log/?tier=gold", "/usage/?key=abc", "/usage/breakdown/?by=colour",
    "/usage/log/?before=garbage", "/usage/?start=2020-01-01&end=2026-01-01",
])
def test_bad_parameters_get_a_400_page_that_says_what_is_wrong(client, users, url):
    client.force_login(users[0])
    response = client.get(url)
    assert response.status_code == 400
    assert b"errornote" in response.content


def test_pages_render_for_a_user_with_no_keys_and_no_traffic(client, users):
    client.force_login(users[2])
    for url in ("/usage/", "/usage/breakdown/?by=key", "/usage/keys/", "/usage/log/"):
        assert client.get(url).status_code == 200
