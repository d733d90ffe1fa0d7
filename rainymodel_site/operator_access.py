"""Who may read what is for operators (the details of /health/ready, /metrics): a request carrying a secret from the
environment as `Authorization: Bearer …`, or a signed-in active staff user.

The staff check reads the session and the user from the database, so it runs in a thread of its own within a time
budget: a hung database costs the caller at most that budget. (Not Django's `auser()`: that runs in the one thread
all sync code shares, which a hung database would block for every later request.) No session cookie: no database
lookup at all.
"""

from __future__ import annotations

import asyncio
import hmac

from django.conf import settings

from rainymodel_site.threads import run_blocking


def bearer_is(request, secret: str) -> bool:
    """The request's Bearer token equals `secret` (compared in constant time); never true for an unset secret."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return bool(secret) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret.encode())


def _is_staff(request) -> bool:
    user = request.user  # reads the session and the user from the database
    return bool(user.is_active and user.is_staff)


async def bearer_or_staff(request, secret: str, budget_s: float) -> bool:
    if bearer_is(request, secret):
        return True
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    try:
        return await asyncio.wait_for(run_blocking(_is_staff, request), budget_s)
    except Exception:  # a timeout or a database error: not staff as far as we can tell
        return False
