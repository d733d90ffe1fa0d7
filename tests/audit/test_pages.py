"""The audit trail in the admin (audit/pages.py): each audited object's History page shows who changed what with the
field diff, and /admin/changes/ lists every recent change across the audited models, filtered by model, source,
kind and actor, to staff who may view those models only."""

from __future__ import annotations

import html
import re
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apikeys.services import apikey_create, apikey_revoke
from audit.history import acting
from routing.models import Alias, Provider, Route

pytestmark = pytest.mark.django_db

CHANGES = "/admin/changes/"


def text_of(response) -> str:
    """The page's visible text, tags removed and whitespace folded, for assertions that read like the page."""
    body = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", html.unescape(body))


@pytest.fixture
def configured(db):
    call_command("routing", "load-defaults", stdout=StringIO())
    with acting(source="admin", actor="olivia"):
        provider = Provider.objects.get(name="hf")
        provider.max_retries = 5
        provider.save()
        route = Route.objects.filter(alias__name="rainymodel/chat").first()
        assert route is not None
        route.weight = 7
        route.save()
    api_key, _ = apikey_create(name="ci-runner")
    apikey_revoke(api_key=api_key)
    return provider


def test_a_providers_history_page_shows_each_version_with_its_diff_source_and_author(admin_client, configured):
    url = reverse("admin:routing_provider_history", args=[configured.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    page = text_of(response)
    assert "Retries on the same route: 2 → 5" in page
    assert "olivia" in page and "admin" in page
    assert "routing load-defaults" in page and "routing/defaults.yaml" in page
    assert "Revert" not in page  # a record, not an undo button


def test_an_aliases_history_page_links_to_its_routes_changes(admin_client, configured):
    alias = Alias.objects.get(name="rainymodel/chat")
    page = admin_client.get(reverse("admin:routing_alias_history", args=[alias.pk])).content.decode()
    link = html.unescape(re.search(r'href="([^"]*model=routing.route[^"]*)"', page).group(1))
    assert f"alias={alias.pk}" in link
    listed = text_of(admin_client.get(link))
    assert "Weight: 1 → 7" in listed
    other_alias_routes = Route.objects.exclude(alias=alias).values_list("upstream_model", flat=True)
    assert all("rainymodel/code: " not in listed for _ in other_alias_routes)


def test_the_list_of_all_changes_shows_every_model_newest_first(admin_client, configured):
    response = admin_client.get(CHANGES)
    assert response.status_code == 200
    page = text_of(response)
    # The newest change (the revocation) comes first, and changes of several models are listed.
    rows = re.findall(r"<tr>(.*?)</tr>", response.content.decode(), flags=re.S)
    assert "ci-runner" in rows[1] and "Revoked:</strong> None" in rows[1]
    for kind in ("provider", "alias", "route", "policy", "API key"):
        assert f" {kind} " in page
    assert "Retries on the same route: 2 → 5" in page


def test_the_list_of_all_changes_filters_by_model_source_kind_and_actor(admin_client, configured):
    page = text_of(admin_client.get(CHANGES, {"model": "routing.provider", "actor": "olivia"}))
    assert "1 change" in page and "hf" in page and "Retries on the same route: 2 → 5" in page
    page = text_of(admin_client.get(CHANGES, {"source": "routing load-defaults", "type": "~"}))
    assert "No changes recorded that match these filters" in page
    page = text_of(admin_client.get(CHANGES, {"model": "apikeys.apikey", "type": "+"}))
    assert "ci-runner" in page and "1 change" in page
    assert admin_client.get(CHANGES, {"model": "routing.route", "alias": "x"}).status_code == 200


def test_staff_see_only_the_changes_of_models_they_may_view(configured, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client = Client()
    client.force_login(clerk)
    page = text_of(client.get(CHANGES))
    assert "ci-runner" in page
    assert "retries on the same route" not in page and " provider " not in page


def test_the_list_of_all_changes_needs_a_staff_sign_in(client, configured, django_user_model):
    response = client.get(CHANGES)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("plain", password="pw-plain-123"))
    assert client.get(CHANGES).status_code == 302


def test_the_admin_header_links_to_the_list_of_all_changes(admin_client):
    assert f'href="{CHANGES}"' in admin_client.get(reverse("admin:index")).content.decode()


def test_a_past_version_opens_read_only_and_cannot_be_saved_back(admin_client, configured):
    from apikeys.models import APIKey
    from tests.audit.test_history import provider_form

    api_key = APIKey.objects.get(name="ci-runner")
    for model, obj in ((Provider, configured), (APIKey, api_key)):
        first = model.history.filter(id=obj.pk).earliest()
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}_simple_history"
        response = admin_client.get(reverse(name, args=[obj.pk, first.pk]))
        assert response.status_code == 200
        assert "Revert" not in text_of(response)
    first = Provider.history.filter(id=configured.pk).earliest()
    url = reverse("admin:routing_provider_simple_history", args=[configured.pk, first.pk])
    assert admin_client.post(url, provider_form(configured, max_retries=1)).status_code == 405
    configured.refresh_from_db()
    assert configured.max_retries == 5


def test_the_source_filter_offers_every_source_recorded(admin_client, configured):
    page = admin_client.get(CHANGES).content.decode()
    offered = re.findall(r'<option value="([^"]+)"[^>]*>\1</option>', page)
    assert {"admin", "routing load-defaults", "code (shell or script)"} <= set(offered)
    assert offered.count("admin") == 1
