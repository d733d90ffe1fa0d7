"""A real OpenID Connect provider for the single sign-on tests: the small Django project in tests/sso/provider
(django-oidc-provider), in its own process on a loopback port, with users alice (no groups) and bob (group
rainymodel-staff) and a confidential client `rainymodel` whose redirect URI is the live server's callback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.test import override_settings

from rainymodel_site import sso

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Provider:
    def __init__(self, issuer: str, private_key_pem: str):
        self.issuer = issuer
        self.private_key_pem = private_key_pem


@pytest.fixture(scope="session")
def oidc_provider(live_server, tmp_path_factory):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.sso.provider.settings",
        "PROVIDER_DB": str(tmp_path_factory.mktemp("provider") / "provider.sqlite3"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], **run)
    pem = subprocess.run(
        [
            sys.executable,
            "tests/sso/provider/setup_provider.py",
            f"{live_server.url}/oidc/callback/",
            f"{live_server.url}/accounts/login/",
        ],
        **run,
    ).stdout
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("the test OpenID Connect provider did not start")
        yield Provider(issuer, pem)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def sso_settings(oidc_provider):
    """RainyModel configured for the test provider, as the RAINYMODEL_OIDC_* environment would."""
    sso._discovery.clear()
    with override_settings(
        RAINYMODEL_OIDC_ISSUER=oidc_provider.issuer,
        OIDC_RP_CLIENT_ID="rainymodel",
        OIDC_RP_CLIENT_SECRET="rainymodel-secret",
        RAINYMODEL_OIDC_STAFF_GROUPS=["rainymodel-staff"],
        RAINYMODEL_OIDC_SUPERUSER_GROUPS=["rainymodel-admins"],
        AUTHENTICATION_BACKENDS=["rainymodel_site.sso.OrcestBackend", "django.contrib.auth.backends.ModelBackend"],
    ):
        yield oidc_provider
    sso._discovery.clear()
