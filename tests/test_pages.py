"""rainymodel_site/pages.py: the landing page at /, /favicon.ico, and the error pages — styled HTML for browsers,
while everything under /v1/ keeps answering JSON in the API's shape."""

from __future__ import annotations

import re

import httpx
import pytest
from django.http import HttpResponse
from django.urls import path

import rainymodel_site.urls as site_urls

pytestmark = pytest.mark.django_db


def _boom(request):
    raise RuntimeError("a bug on purpose")


# A URLconf for the 500 tests: the site's own, plus two views that fail (one of them under /v1/).
urlpatterns = [path("boom/", _boom), path("v1/boom", _boom), *site_urls.urlpatterns]
handler400, handler403 = site_urls.handler400, site_urls.handler403
handler404, handler500 = site_urls.handler404, site_urls.handler500


def test_the_landing_page_says_what_the_site_is_and_where_to_go(client):
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "RainyModel" in body and "OpenAI-compatible" in body and "Orcest AI" in body
    assert '<code id="base-url">http://testserver/v1</code>' in body
    for link in ('href="/usage/"', 'href="/admin/"', 'href="/health"', 'href="#docs"'):
        assert link in body
    assert 'id="docs"' in body
    assert 'rel="icon" href="/static/favicon.svg"' in body


def test_the_base_url_on_the_landing_page_works_with_the_openai_sdk(
    transactional_db, fake_upstream, make_routing, api_key
):
    """The real ASGI application on a loopback port: what the page tells a user to do, done with the SDK."""
    import openai

    from tests.e2e.conftest import InProcessProxy
    from tests.fakes.routing_config import upstream

    make_routing(upstream(fake_upstream))
    _, key = api_key(name="landing")
    proxy = InProcessProxy().start()
    try:
        proxy.reload()
        page = httpx.get(proxy.url + "/", timeout=10)
        base_url = re.search(r'<code id="base-url">([^<]+)</code>', page.text).group(1)
        assert base_url == proxy.url + "/v1"
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        assert "rainymodel/auto" in [m.id for m in client.models.list()]
        answer = client.chat.completions.create(
            model="rainymodel/auto", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert answer.choices[0].message.content
        favicon = httpx.get(proxy.url + "/favicon.ico", timeout=10)
        assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/svg+xml"
        assert favicon.content.startswith(b"<svg") and "max-age" in favicon.headers["cache-control"]
        linked = httpx.get(proxy.url + "/static/favicon.svg", timeout=10)
        assert linked.status_code == 200 and linked.content == favicon.content
        missing = httpx.get(proxy.url + "/no-such-page/", timeout=10)
        assert missing.status_code == 404 and "Page not found" in missing.text
        api_missing = httpx.get(proxy.url + "/v1/no-such-endpoint", timeout=10)
        assert api_missing.status_code == 404 and api_missing.json()["error"]["code"] == "unknown_url"
    finally:
        proxy.stop()


def _styled(response: HttpResponse, status: int, heading: str) -> str:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "/static/usage/usage.css" in body and "/static/favicon.svg" in body
    assert heading in body and f'<p class="error-status">{status}</p>' in body
    return body


def test_another_users_key_is_a_styled_404_that_names_nothing(client, django_user_model, api_key):
    owner = django_user_model.objects.create_user("owner", password="x")
    other = django_user_model.objects.create_user("other", password="x")
    key, _ = api_key(name="owners-secret-project", owner=owner)
    client.force_login(other)
    body = _styled(client.get(f"/usage/keys/{key.id}/"), 404, "Page not found")
    assert "owners-secret-project" not in body and key.prefix not in body
    _styled(client.get("/no-such-page/"), 404, "Page not found")


def test_unknown_api_paths_stay_json(client):
    response = client.get("/v1/no-such-endpoint")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "unknown_url"


def test_a_disallowed_host_gets_a_styled_400_page_or_a_json_error_under_v1(client):
    _styled(client.get("/usage/", HTTP_HOST="evil.example"), 400, "That request could not be understood")
    response = client.get("/v1/models", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_staff_without_permission_gets_a_styled_403(client, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(clerk)
    _styled(client.get("/admin/auth/user/"), 403, "You may not do this")


def test_a_403_under_v1_is_json(rf):
    from rainymodel_site import pages

    response = pages.permission_denied(rf.get("/v1/models"))
    assert response.status_code == 403 and response["Content-Type"] == "application/json"


@pytest.mark.urls("tests.test_pages")
def test_a_server_error_is_a_styled_500_page_or_a_json_error_under_v1(client):
    client.raise_request_exception = False
    _styled(client.get("/boom/"), 500, "Something went wrong on our side")
    response = client.get("/v1/boom")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"


def test_every_page_template_links_the_favicon(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="x"))
    for url in ("/", "/usage/", "/usage/log/", "/accounts/login/"):
        assert 'rel="icon" href="/static/favicon.svg"' in client.get(url).content.decode(), url
