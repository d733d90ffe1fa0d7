"""A route's endpoints in the admin's route table (issue 12): ticked as checkboxes, saved as the list the snapshot
reads, none ticked meaning every endpoint; a hand-made unknown name is refused with the field's message."""

import pytest
from django.urls import reverse

from routing.models import Alias, Provider, Route


@pytest.fixture
def embed_alias(db):
    ollama = Provider.objects.create(name="ollama", kind="ollama", tier="internal", base_url="http://o/v1")
    alias = Alias.objects.create(name="rainymodel/embed")
    route = Route.objects.create(
        alias=alias, provider=ollama, upstream_model="nomic-embed-text", endpoints=["embeddings"]
    )
    return alias, route


def change_url(alias):
    return reverse("admin:routing_alias_change", args=[alias.pk])


def post_route(admin_client, alias, route, endpoints):
    data = {
        "name": alias.name,
        "description": "",
        "enabled": "on",
        "listed": "on",
        "default_policy": "",
        "routes-TOTAL_FORMS": "1",
        "routes-INITIAL_FORMS": "1",
        "routes-MIN_NUM_FORMS": "0",
        "routes-MAX_NUM_FORMS": "1000",
        "routes-0-id": str(route.pk),
        "routes-0-alias": str(alias.pk),
        "routes-0-provider": str(route.provider_id),
        "routes-0-upstream_model": route.upstream_model,
        "routes-0-enabled": "on",
        "routes-0-position": "0",
        "routes-0-weight": "1",
        "routes-0-context_window": "",
        "routes-0-input_price_per_mtok": "0",
        "routes-0-output_price_per_mtok": "0",
        "routes-0-endpoints": endpoints,
    }
    return admin_client.post(change_url(alias), data)


def test_the_route_table_shows_endpoints_as_checkboxes_ticked_as_stored(admin_client, embed_alias):
    alias, _ = embed_alias
    page = admin_client.get(change_url(alias)).text
    assert 'name="routes-0-endpoints" value="embeddings" id="id_routes-0-endpoints_1" checked' in page
    for name in ("chat", "completions"):
        assert f'name="routes-0-endpoints" value="{name}"' in page
    assert page.count('name="routes-0-endpoints"') == 3


@pytest.mark.parametrize(
    "ticked, stored",
    [
        (["completions", "chat"], ["chat", "completions"]),
        ([], []),
    ],
)
def test_ticked_endpoints_are_saved_in_one_order_and_none_means_every_endpoint(
    admin_client, embed_alias, ticked, stored
):
    alias, route = embed_alias
    response = post_route(admin_client, alias, route, ticked)
    assert response.status_code == 302, response.text
    route.refresh_from_db()
    assert route.endpoints == stored


def test_an_unknown_endpoint_is_refused_and_nothing_is_saved(admin_client, embed_alias):
    alias, route = embed_alias
    response = post_route(admin_client, alias, route, ["chat", "rerank"])
    assert response.status_code == 200
    assert "Select a valid choice. rerank is not one of the available choices." in response.text
    route.refresh_from_db()
    assert route.endpoints == ["embeddings"]
