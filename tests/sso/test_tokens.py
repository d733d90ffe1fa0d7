"""ID-token checks of rainymodel_site.sso.OrcestBackend against the real test provider's JWKS: a token signed by the
provider's key passes; a bad signature, a past `exp`, another issuer or another audience is refused."""

from __future__ import annotations

import time

import jwt
import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import RequestFactory

from rainymodel_site.sso import OrcestBackend

pytestmark = pytest.mark.django_db(transaction=True)


def _kid(issuer: str) -> str:
    import httpx

    return httpx.get(f"{issuer}/jwks").json()["keys"][0]["kid"]


def _token(provider, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": "42", "aud": "rainymodel", "iat": now, "exp": now + 600, "nonce": "n1"}
    claims.update(overrides)
    return jwt.encode(claims, provider.private_key_pem, algorithm="RS256", headers={"kid": _kid(provider.issuer)})


def test_a_token_signed_by_the_provider_passes(sso_settings):
    payload = OrcestBackend().verify_token(_token(sso_settings), nonce="n1")
    assert payload["sub"] == "42"


def test_a_tampered_signature_is_refused(sso_settings):
    token = _token(sso_settings)
    head, body, signature = token.split(".")
    forged_body = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(body).replace(b'"sub":"42"', b'"sub":"1"')
    ).decode()
    with pytest.raises(SuspiciousOperation):
        OrcestBackend().verify_token(f"{head}.{forged_body}.{signature}", nonce="n1")


def test_a_token_signed_by_another_key_is_refused(sso_settings):
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": sso_settings.issuer, "sub": "42", "aud": "rainymodel", "exp": now + 600, "nonce": "n1"}
    token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": _kid(sso_settings.issuer)})
    with pytest.raises(SuspiciousOperation):
        OrcestBackend().verify_token(token, nonce="n1")


def test_an_expired_token_is_refused(sso_settings):
    past = int(time.time()) - 3600
    with pytest.raises(jwt.ExpiredSignatureError):
        OrcestBackend().verify_token(_token(sso_settings, iat=past - 600, exp=past), nonce="n1")


@pytest.mark.parametrize("override", [{"iss": "http://127.0.0.1:1"}, {"aud": "another-client"}, {"nonce": "n2"}])
def test_a_token_for_another_issuer_client_or_nonce_is_refused(sso_settings, override):
    with pytest.raises(SuspiciousOperation):
        OrcestBackend().verify_token(_token(sso_settings, **override), nonce="n1")


def test_a_refused_token_signs_nobody_in(sso_settings, monkeypatch):
    """The whole backend: a callback whose token exchange yields an expired ID token ends with no user."""
    past = int(time.time()) - 3600
    expired = _token(sso_settings, iat=past - 600, exp=past)
    backend = OrcestBackend()
    # The provider's token endpoint only hands out fresh tokens, so the exchange is the one stand-in here.
    monkeypatch.setattr(backend, "get_token", lambda payload: {"id_token": expired, "access_token": "a"})
    request = RequestFactory().get("/oidc/callback/", {"code": "c", "state": "s"})
    request.session = {}
    assert backend.authenticate(request, nonce="n1", code_verifier=None) is None
