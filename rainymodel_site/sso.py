"""Single sign-on with Orcest Login (OpenID Connect), on mozilla-django-oidc. See docs/users.md.

Off unless `RAINYMODEL_OIDC_ISSUER` is set; then the sign-in pages show "Sign in with Orcest" beside the password
form. The provider's endpoints come from its discovery document (`<issuer>/.well-known/openid-configuration`),
fetched on first use and kept for the process (a failed fetch is not kept, so it is retried).

Users are linked by the token's `sub`: the local username is `orcest:<sub>`, so a provider account can never take
over a local password account by choosing its `preferred_username` or email. Email and name are copied from the
claims at every sign-in, and so are staff and superuser status from the groups claim
(`RAINYMODEL_OIDC_GROUPS_CLAIM`, `RAINYMODEL_OIDC_STAFF_GROUPS`, `RAINYMODEL_OIDC_SUPERUSER_GROUPS`): removing a
user from the group at the provider removes the status at their next sign-in. A staff user's permissions come from
the local groups (Django admin, Groups) named like their provider groups: membership of those is set at every
sign-in too.

ID tokens are checked for signature (the provider's JWKS), expiry, issuer, audience and nonce; anything else
ends in the sign-in page again, never a session.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.views import View
from mozilla_django_oidc import auth as oidc_auth  # type: ignore[import-untyped]
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.utils import import_from_settings  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

USERNAME_PREFIX = "orcest:"

# mozilla-django-oidc setting -> key of the discovery document.
_DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
_lock = threading.Lock()
_discovery: dict[str, dict[str, Any]] = {}


def enabled() -> bool:
    return bool(getattr(settings, "RAINYMODEL_OIDC_ISSUER", ""))


def discovery() -> dict[str, Any]:
    """The provider's discovery document, fetched once per issuer and process."""
    issuer = settings.RAINYMODEL_OIDC_ISSUER.rstrip("/")
    with _lock:
        if issuer not in _discovery:
            response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
            response.raise_for_status()
            _discovery[issuer] = response.json()
        return _discovery[issuer]


def get_settings(attr: str, *args: Any) -> Any:
    """Settings for mozilla-django-oidc, with the provider's endpoints taken from discovery."""
    if attr in _DISCOVERED and not getattr(settings, attr, None):
        return discovery()[_DISCOVERED[attr]]
    return import_from_settings(attr, *args)


def username_for(sub: str) -> str:
    name = USERNAME_PREFIX + sub
    if len(name) > 150:  # Django's username limit; a long sub is still a stable, unique link
        name = USERNAME_PREFIX + hashlib.sha256(sub.encode()).hexdigest()
    return name


class OrcestBackend(oidc_auth.OIDCAuthenticationBackend):
    """Creates and updates users from Orcest Login's claims; maps groups to staff and superuser."""

    get_settings = staticmethod(get_settings)

    def __init__(self, *args, **kwargs):
        # Django builds every listed backend for every password sign-in and every signed-in request: an unreachable
        # provider must not break those, only sign-in through it.
        self.unavailable = False
        try:
            super().__init__(*args, **kwargs)
        except requests.RequestException as exc:
            log.warning("Orcest Login's discovery document cannot be fetched: %s", exc)
            self.unavailable = True
            self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        if self.unavailable:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError, requests.RequestException) as exc:
            log.warning("Orcest sign-in refused: %s", exc)
            return None

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)  # signature, expiry (PyJWT) and nonce
        issuer = discovery().get("issuer", settings.RAINYMODEL_OIDC_ISSUER)
        if payload.get("iss") != issuer:
            raise SuspiciousOperation("ID token from another issuer")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token for another client")
        if not payload.get("sub"):
            raise SuspiciousOperation("ID token without a subject")
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        # The ID token's verified claims, completed by the userinfo endpoint; the subject must be the same.
        claims = dict(payload)
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") not in (None, payload.get("sub")):
            raise SuspiciousOperation("userinfo for another subject")
        claims.update(userinfo)
        return claims

    def verify_claims(self, claims):
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(username=username_for(claims["sub"]))

    def create_user(self, claims):
        user = self.UserModel(username=username_for(claims["sub"]))
        user.set_unusable_password()
        return self._apply_claims(user, claims)

    def update_user(self, user, claims):
        return self._apply_claims(user, claims)

    def _apply_claims(self, user, claims):
        groups_claim = claims.get(settings.RAINYMODEL_OIDC_GROUPS_CLAIM) or []
        groups = {groups_claim} if isinstance(groups_claim, str) else set(groups_claim)
        user.email = claims.get("email", "") or ""
        user.first_name = (claims.get("given_name") or claims.get("name") or "")[:150]
        user.last_name = (claims.get("family_name") or "")[:150]
        user.is_superuser = bool(groups & set(settings.RAINYMODEL_OIDC_SUPERUSER_GROUPS))
        user.is_staff = user.is_superuser or bool(groups & set(settings.RAINYMODEL_OIDC_STAFF_GROUPS))
        user.save()
        # Permissions in the admin: membership of the local groups named like the user's provider groups.
        user.groups.set(Group.objects.filter(name__in=groups))
        return user


class _OnlyWhenEnabled:
    """The /oidc/ views answer 404 while single sign-on is not configured."""

    get_settings = staticmethod(get_settings)

    def dispatch(self, request, *args, **kwargs):
        if not enabled():
            raise Http404("single sign-on is not configured")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class AuthenticateView(_OnlyWhenEnabled, oidc_views.OIDCAuthenticationRequestView):
    """Sends the browser to the provider. The parent reads the endpoints at construction; here that waits until
    dispatch, so that an unconfigured site answers 404 and an unreachable provider a clear 503, not a 500."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        if enabled():
            try:
                oidc_views.OIDCAuthenticationRequestView.__init__(self)
            except requests.RequestException as exc:
                log.warning("Orcest Login's discovery document cannot be fetched: %s", exc)
                return HttpResponse(
                    "Orcest Login cannot be reached right now. Sign in with your password, or try again later.",
                    status=503,
                    content_type="text/plain",
                )
        return super().dispatch(request, *args, **kwargs)


class CallbackView(_OnlyWhenEnabled, oidc_views.OIDCAuthenticationCallbackView):
    pass


class LogoutView(_OnlyWhenEnabled, oidc_views.OIDCLogoutView):
    pass


def provider_logout_url(request) -> str:
    """Where logout sends the browser: the provider's end_session_endpoint when it has one (ending its session too,
    then back to our sign-in page), else our sign-in page."""
    back = request.build_absolute_uri(settings.LOGOUT_REDIRECT_URL)
    try:
        end_session = discovery().get("end_session_endpoint")
    except requests.RequestException:
        end_session = None
    if not end_session:
        return settings.LOGOUT_REDIRECT_URL
    params = {"post_logout_redirect_uri": back, "client_id": settings.OIDC_RP_CLIENT_ID}
    id_token = request.session.get("oidc_id_token")
    if id_token:
        params["id_token_hint"] = id_token
    return f"{end_session}?{urlencode(params)}"


def context(request) -> dict[str, bool]:
    """Template context: whether to show "Sign in with Orcest"."""
    return {"orcest_sso": enabled()}


def logout_view(fallback: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The site's logout (the usage pages' and the admin's): a session signed in through Orcest Login is ended here
    and at the provider (LogoutView); any other session is handled by `fallback`, Django's own view, as before."""

    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        signed_in_by_sso = request.session.get(BACKEND_SESSION_KEY) == f"{__name__}.OrcestBackend"
        if request.method == "POST" and enabled() and signed_in_by_sso:
            return LogoutView.as_view()(request)
        return fallback(request, *args, **kwargs)

    return view
