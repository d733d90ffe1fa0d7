"""CSV exports (issues 9 and 10): cells a spreadsheet would run as formulas are neutralised, costs are plain
decimals, and the request-log export streams from an async iterator over a server-side cursor — checked through
the real ASGI application on a socket as well as through Django's test client."""

from __future__ import annotations

import csv
import io
import warnings
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from tests.e2e.conftest import chat, proxy  # noqa: F401  (proxy is a fixture)
from tests.fakes.routing_config import upstream
from tests.usage.conftest import make_row, write
from usage.views import csv_cell


@pytest.mark.parametrize(
    "value, cell",
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("rainymodel/auto", "rainymodel/auto"),
        ("", ""),
        (None, ""),
        (Decimal("0E-8"), "0"),
        (Decimal("8.7E-7"), "0.00000087"),
        (1.083e-05, "0.00001083"),
        (Decimal("12.50000000"), "12.5"),
        (7, 7),
        (True, True),
    ],
)
def test_csv_cells_neutralise_formulas_and_write_plain_decimals(value, cell):
    assert csv_cell(value) == cell


def _session_cookie(client, user) -> dict[str, str]:
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


def _parse(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_formula_model_names_and_user_agents_reach_the_csv_neutralised(
    fake_upstream, make_routing, api_key, proxy, client, admin_user
):  # noqa: F811
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    client_sdk = proxy.openai(key, default_headers={"User-Agent": "@SUM(1+1)*cmd|' /C calc'!A0"})
    client_sdk.chat.completions.create(model='=HYPERLINK("http://evil.example","click")', messages=chat()["messages"])
    proxy.logs(expected=1)
    # Through the real ASGI application and uvicorn, as a browser would download it.
    response = httpx.get(
        proxy.url + "/usage/log.csv?period=24h", cookies=_session_cookie(client, admin_user), timeout=30
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    [row] = _parse(response.text)
    assert row["requested_model"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["user_agent"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert row["status"] == "200"


def test_the_log_export_streams_every_row_through_asgi(proxy, client, admin_user, api_key):  # noqa: F811
    key, _ = api_key()
    now = timezone.now()
    rows = [make_row(created_at=now - timedelta(seconds=i), api_key=key, alias=f"alias-{i}") for i in range(3000)]
    write(rows)
    with httpx.stream(
        "GET", proxy.url + "/usage/log.csv?period=24h", cookies=_session_cookie(client, admin_user), timeout=30
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"  # no Content-Length: it was streamed
        pieces = list(response.iter_text())
    got = _parse("".join(pieces))
    assert [r["id"] for r in got] == [
        r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    ]


def test_costs_are_plain_decimals_in_both_exports_and_on_the_pages(client, users, api_key):
    staff = users[0]
    key, _ = api_key()
    now = timezone.now()
    write(
        [
            make_row(created_at=now - timedelta(minutes=1), api_key=key, tier="free"),  # costs 0E-8
            make_row(
                created_at=now - timedelta(minutes=2),
                api_key=key,
                tier="premium",
                prompt_tokens=2,
                completion_tokens=1,
                alias="rainymodel/code",
            ),
        ]
    )  # 0.00000090
    client.force_login(staff)
    response = client.get("/usage/log.csv?period=24h")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = b"".join(response).decode()
    assert sorted(r["cost_usd"] for r in _parse(text)) == ["0", "0.0000009"]
    breakdown = client.get("/usage/breakdown/?by=alias&period=24h&format=csv").content.decode()
    assert sorted(r["cost_usd"] for r in _parse(breakdown)) == ["0", "0.0000009"]
    for url in (
        "/usage/?period=24h",
        "/usage/breakdown/?by=alias&period=24h",
        "/usage/log/?period=24h",
        f"/usage/keys/{key.id}/?period=24h",
    ):
        page = client.get(url).content.decode()
        assert "E-" not in page and "e-0" not in page, url


def test_the_first_rows_leave_before_the_last_are_read(proxy, client, admin_user, api_key, monkeypatch):  # noqa: F811
    """The export is held half-way (a row near the end waits for the test): the first rows must already have
    arrived by then. An export built whole before sending would wait out the hold first."""
    import threading

    from usage import views

    key, _ = api_key()
    now = timezone.now()
    rows = [make_row(created_at=now - timedelta(seconds=i), api_key=key) for i in range(200)]
    write(rows)
    held_row = rows[150]["id"]  # newest first: row 150 is written after the first 150
    release, held = threading.Event(), {}
    real_cell = views.csv_cell

    def holding_cell(value):
        if value == held_row:
            held["released_in_time"] = release.wait(10)
        return real_cell(value)

    monkeypatch.setattr(views, "csv_cell", holding_cell)
    monkeypatch.setattr(views, "CSV_FLUSH_CHARS", 1)  # one piece per row
    with httpx.stream(
        "GET", proxy.url + "/usage/log.csv?period=24h", cookies=_session_cookie(client, admin_user), timeout=30
    ) as response:
        received = ""
        chunks = response.iter_text()
        while rows[0]["id"] not in received:
            received += next(chunks)
        release.set()  # only now may the export go on past row 150
        received += "".join(chunks)
    assert held == {"released_in_time": True}
    assert len(_parse(received)) == 200
