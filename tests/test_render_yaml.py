"""render.yaml (SPEC §9): the Render Blueprint deploys what the docs say, and Render's published schema accepts it.

The schema is Render's own (https://render.com/schema/render.yaml.json). Render publishes it without a licence, so
it is not committed here: point RENDER_BLUEPRINT_SCHEMA at a downloaded copy to run the schema test (see
docs/operations.md, "Deploying on Render"); without it that one test is skipped and says why.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_ENV = "RENDER_BLUEPRINT_SCHEMA"


def blueprint() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def web_service(doc: dict) -> dict:
    (web,) = [s for s in doc["services"] if s["type"] == "web"]
    return web


def env_of(service: dict) -> dict:
    return {e["key"]: e for e in service["envVars"]}


def test_render_yaml_is_valid_against_renders_published_schema():
    path = os.environ.get(SCHEMA_ENV)
    if not path:
        pytest.skip(f"{SCHEMA_ENV} is not set: Render's blueprint schema is not vendored (no published licence)")
    import jsonschema

    schema = json.loads(Path(path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(blueprint())]
    assert errors == []


def test_web_service_deploys_main_automatically_on_the_custom_domain():
    web = web_service(blueprint())
    assert web["branch"] == "main"
    assert web.get("autoDeployTrigger") == "commit" or web.get("autoDeploy") is True
    assert web["domains"] == ["rm.orcest.ai"]
    assert web["healthCheckPath"] == "/health"


def test_web_service_starts_gunicorn_with_its_config_file():
    assert web_service(blueprint())["startCommand"].split() == [
        "gunicorn",
        "rainymodel_site.asgi:application",
        "-c",
        "gunicorn.conf.py",
    ]


def test_web_service_environment_serves_the_domain_over_https_behind_renders_proxy():
    env = env_of(web_service(blueprint()))
    assert env["ALLOWED_HOSTS"]["value"] == "rm.orcest.ai"
    assert env["CSRF_TRUSTED_ORIGINS"]["value"] == "https://rm.orcest.ai"
    assert env["RAINYMODEL_HTTPS"]["value"] == "true"
    # Never "*": uvicorn would then take the left-most X-Forwarded-For entry, which the client chooses.
    assert env["FORWARDED_ALLOW_IPS"]["value"] == "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    assert int(env["WEB_CONCURRENCY"]["value"]) >= 1
    assert env["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": True}


def test_secrets_are_never_committed_values():
    env = env_of(web_service(blueprint()))
    for name in ("RAINYMODEL_MASTER_KEY", "HF_TOKEN", "OPENROUTER_API_KEY", "OLLAMA_API_KEY", "EMAIL_HOST_PASSWORD"):
        assert env[name] == {"key": name, "sync": False}
