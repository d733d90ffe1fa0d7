"""usage/throttle.py: per-user rates on the usage pages and CSV exports (django-ratelimit on the cache)."""

from __future__ import annotations

import pytest


@pytest.fixture
def low_rates(settings):
    settings.RAINYMODEL_USAGE_PAGES_RATE = "3/m"
    settings.RAINYMODEL_USAGE_CSV_RATE = "2/m"


def test_pages_past_the_users_rate_get_a_styled_429(client, users, low_rates):
    _, alice, bob = users
    client.force_login(alice)
    for _ in range(3):
        assert client.get("/usage/").status_code == 200
    refused = client.get("/usage/keys/")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    body = refused.content.decode()
    assert "Slow down a little" in body and "more pages" in body
    assert "<html" in body.lower()  # the site's own page, not a bare text response
    client.force_login(bob)  # another user has a rate of their own
    assert client.get("/usage/").status_code == 200


def test_csv_exports_have_their_own_lower_rate(client, users, low_rates):
    _, alice, _ = users
    client.force_login(alice)
    assert client.get("/usage/log.csv").status_code == 200
    assert client.get("/usage/breakdown/?by=alias&format=csv").status_code == 200
    refused = client.get("/usage/log.csv")
    assert refused.status_code == 429
    assert "more CSV exports" in refused.content.decode()
    assert client.get("/usage/breakdown/?by=alias").status_code == 200  # pages still count on their own


def test_signed_out_visitors_are_sent_to_sign_in_not_counted(client, db, low_rates):
    for _ in range(5):
        assert client.get("/usage/").status_code == 302
