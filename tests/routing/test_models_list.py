"""`GET /v1/models` says which endpoints each alias serves (issue 12): the shipped defaults, read through the real
snapshot and view."""

import pytest

from routing import snapshot
from routing.config_file import import_file

from .conftest import DEFAULTS_FILE

MASTER = "master-key-for-the-models-list-test"


@pytest.fixture
def models(db, client, settings):
    settings.RAINYMODEL_MASTER_KEY = MASTER
    import_file(str(DEFAULTS_FILE))
    snapshot.refresh()
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["data"]}


def test_each_listed_alias_names_the_endpoints_its_routes_serve(models):
    assert {name: m["endpoints"] for name, m in models.items()} == {
        "rainymodel/auto": ["chat", "embeddings", "completions"],  # its routes name none: every endpoint
        "rainymodel/chat": ["chat", "embeddings", "completions"],
        "rainymodel/agent": ["chat", "embeddings", "completions"],
        "rainymodel/code": ["chat", "completions"],
        "rainymodel/embed": ["embeddings"],
    }
    assert {"id", "object", "created", "owned_by", "description"} <= set(models["rainymodel/embed"])
