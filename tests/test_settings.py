"""Production settings (rainymodel_site/settings.py): `manage.py check --deploy` is clean with the environment
render.yaml gives the web service, and the HTTPS settings leave /health and /v1/ reachable behind the proxy."""

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def render_env() -> dict[str, str]:
    """The web service's literal env values from render.yaml, plus what Render itself provides."""
    doc = yaml.safe_load((ROOT / "render.yaml").read_text())
    (web,) = [s for s in doc["services"] if s["type"] == "web"]
    env = {e["key"]: str(e["value"]) for e in web["envVars"] if "value" in e}
    env["RENDER_EXTERNAL_HOSTNAME"] = "rainymodel.onrender.com"
    # Render's `generateValue`: a base64-encoded 256-bit value (44 characters).
    env["SECRET_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    return env


def check_deploy(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    full = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_render_environment(tmp_path):
    result = check_deploy(render_env(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_https_is_not_switched_on(tmp_path):
    env = render_env()
    del env["RAINYMODEL_HTTPS"]
    result = check_deploy(env, tmp_path)
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr + result.stdout


def test_a_short_or_repetitive_secret_key_still_fails_the_check(tmp_path):
    for weak in ("short-but-not-the-dev-value", "ab" * 22):
        result = check_deploy(dict(render_env(), SECRET_KEY=weak), tmp_path)
        assert result.returncode != 0 and "security.W009" in result.stderr + result.stdout, weak


def test_csrf_trusted_origins_default_to_the_public_hosts(tmp_path):
    code = "from django.conf import settings; print(settings.CSRF_TRUSTED_ORIGINS)"
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "rainymodel_site.settings",
        "SECRET_KEY": "x" * 60 + "yz",
        "ALLOWED_HOSTS": "rm.orcest.ai,localhost",
        "RENDER_EXTERNAL_HOSTNAME": "rainymodel.onrender.com",
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "['https://rm.orcest.ai', 'https://rainymodel.onrender.com']", out.stderr


@pytest.fixture
def https_server(rainymodel_server):
    """Factory: a real server process with RAINYMODEL_HTTPS on, trusting proxy headers from `trusted` peers."""

    def start(trusted: str):
        return rainymodel_server(
            env={"RAINYMODEL_HTTPS": "true", "FORWARDED_ALLOW_IPS": trusted, "ALLOWED_HOSTS": "127.0.0.1,rm.orcest.ai"}
        )

    return start


def test_behind_https_health_and_the_api_answer_plain_http_but_pages_redirect(https_server):
    server = https_server(trusted="127.0.0.1")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health/ready").status_code in (200, 503)  # answered, not redirected
        assert client.get("/v1/models").status_code == 401
        page = client.get("/admin/login/")
        assert page.status_code == 301 and page.headers["location"].startswith("https://")


def test_a_trusted_proxy_saying_https_gets_the_page_with_hsts(https_server):
    server = https_server(trusted="127.0.0.1")
    r = httpx.get(server.url + "/admin/login/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert "secure" in r.headers["set-cookie"].lower()


def test_an_untrusted_peer_cannot_claim_https(https_server):
    server = https_server(trusted="192.0.2.1")  # documentation address: the test client is not that proxy
    r = httpx.get(server.url + "/admin/login/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert r.status_code == 301 and r.headers["location"].startswith("https://")
