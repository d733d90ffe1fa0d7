"""API-key authentication over the in-process snapshot: no database query on the request path.

`authenticate(snap, headers)` accepts `Authorization: Bearer <key>`, `api-key: <key>` or `x-api-key: <key>` (the
anthropic SDK's header; every /v1/ endpoint takes all three, docs/api.md), looks the key up by prefix
in the snapshot and compares its HMAC in constant time. The master key (`RAINYMODEL_MASTER_KEY`) is compared in
constant time too and has no limits. `authenticate_request(snap, headers)` is the request path's form: a key the
snapshot does not know yet (created a moment ago) gets one rate-limited version check before it is refused.

`require_key(request)` is the one door of every /v1/ endpoint: the ASGI edge (rainymodel_site/asgi.py) calls it
before reading the body, and the views call it again (or use `api_key_required`), which costs nothing because the
edge's answer is kept on the request. It counts failed attempts per client IP (limits/auth_failures.py) and answers in
the API's shape (401, then 429 past RAINYMODEL_AUTH_FAILURES_PER_MIN).
"""

from __future__ import annotations

import hmac
from functools import wraps
from inspect import iscoroutinefunction

from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

import limits
from apikeys.keys import hash_key, key_prefix, looks_like_key
from rainymodel_site import error_codes as codes
from rainymodel_site.api_errors import ApiError, api_error_response
from routing import snapshot
from routing.snapshot import MASTER_KEY_INFO, KeyInfo, Snapshot


class KeyRejected(Exception):
    """The request's credentials were refused; `code` is the SPEC's error code (401 in every case)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownKey(KeyRejected):
    """A well-formed key whose prefix the snapshot does not hold: unknown, or newer than the snapshot."""


def presented_key(headers) -> str | None:
    """The key the client sent, from `Authorization: Bearer`, `api-key` or `x-api-key` (first found, in that order);
    None when there is none."""
    authorization = headers.get("authorization") or headers.get("Authorization") or ""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = (headers.get("api-key") or headers.get("Api-Key") or "").strip()
    if not value:
        value = (headers.get("x-api-key") or headers.get("X-Api-Key") or "").strip()
    return value or None


def authenticate(snap: Snapshot, headers) -> KeyInfo:
    """Return the caller's key or raise KeyRejected (`invalid_api_key` or `key_expired`)."""
    key = presented_key(headers)
    if not key:
        raise KeyRejected(
            codes.INVALID_API_KEY,
            "No API key provided. Send it as 'Authorization: Bearer <key>' or in the 'api-key' or 'x-api-key' header.",
        )
    master = settings.RAINYMODEL_MASTER_KEY
    if master and hmac.compare_digest(key.encode(), master.encode()):
        return MASTER_KEY_INFO
    info = snap.keys_by_prefix.get(key_prefix(key))
    # Compute the HMAC even for an unknown prefix so timing does not tell which prefixes exist.
    digest = hash_key(key)
    if info is None and looks_like_key(key):
        raise UnknownKey(codes.INVALID_API_KEY, "Incorrect API key provided.")
    if info is None or info.revoked or not _secret_matches(info, digest):
        raise KeyRejected(codes.INVALID_API_KEY, "Incorrect API key provided.")
    if info.expires_at is not None and info.expires_at <= timezone.now():
        raise KeyRejected(codes.KEY_EXPIRED, "This API key has expired.")
    return info


def _secret_matches(info: KeyInfo, digest: str) -> bool:
    """The presented key's HMAC against the key's secret and, after a rotation, its previous secret until the grace
    ends. Both comparisons always run, in constant time, so timing does not tell which one matched."""
    current = hmac.compare_digest(digest, info.hashed_key)
    previous = hmac.compare_digest(digest, info.previous_hashed_key or "0" * 64)
    in_grace = info.previous_valid_until is not None and info.previous_valid_until > timezone.now()
    return current or (previous and in_grace and bool(info.previous_hashed_key))


async def authenticate_request(snap: Snapshot, headers) -> KeyInfo:
    """`authenticate`, but a well-formed key missing from `snap` first gets one version check (`snapshot.catch_up`,
    rate-limited per process), so a key works on its first request instead of after the next poll.

    The wait makes a 401 for an unknown prefix slower than one for a known prefix with a wrong secret. That tells a
    prober only whether a prefix exists, which is no secret (the admin, `apikey list` and the log show prefixes);
    the rest of the key is 31 random characters, and failed attempts are rate-limited per client IP."""
    try:
        return authenticate(snap, headers)
    except UnknownKey:
        fresh = await snapshot.catch_up(snap)
        if fresh is None:
            raise
        return authenticate(fresh, headers)


async def require_key(request) -> KeyInfo:
    """The caller's key, from the current snapshot (with `authenticate_request`'s catch-up), or ApiError: 401 with
    the rejection's code, or 429 once this client IP has had RAINYMODEL_AUTH_FAILURES_PER_MIN failures in the
    window. Every failure is counted. The key is kept on the request as `request.api_key`, so a second call (the
    edge's, then the view's) is the same answer without a second look-up or a second count."""
    key = getattr(request, "api_key", None)
    if key is not None:
        return key
    try:
        key = await authenticate_request(snapshot.current(), request.headers)
    except KeyRejected as rejected:
        ip = request.META.get("REMOTE_ADDR") or "unknown"
        try:
            await limits.check_auth_failures(ip)
        except limits.LimitExceeded as exceeded:
            raise ApiError(
                429, exceeded.code, exceeded.message, type=exceeded.type, headers=dict(exceeded.headers)
            ) from None
        await limits.record_auth_failure(ip)
        raise ApiError(401, rejected.code, rejected.message) from None
    request.api_key = key
    return key


def api_key_required(view):
    """Decorator for a plain Django view under /v1/ (sync or async): the view runs only behind `require_key`, and
    reads the key as `request.api_key`; a refusal is answered as an OpenAI-shaped error."""
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_door(request, *args, **kwargs):
            try:
                await require_key(request)
            except ApiError as error:
                return api_error_response(error)
            return await view(request, *args, **kwargs)

        return async_door

    @wraps(view)
    def door(request, *args, **kwargs):
        if getattr(request, "api_key", None) is None:  # the edge checked it already, unless a test skipped the edge
            try:
                async_to_sync(require_key)(request)
            except ApiError as error:
                return api_error_response(error)
        return view(request, *args, **kwargs)

    return door
