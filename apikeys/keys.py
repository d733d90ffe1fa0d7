"""API key material: generate, HMAC, verify. The full key exists only in the caller's hands and in the one
response that creates it; the database holds its prefix and an HMAC-SHA256 keyed by SECRET_KEY."""

import hashlib
import hmac
import secrets

from django.conf import settings

KEY_PREFIX = "rm-"
PREFIX_LENGTH = 12  # "rm-" + 9 random characters: unique enough to look up, short enough to show
RANDOM_LENGTH = 40


def generate_key() -> str:
    """A new key: `rm-` followed by 40 URL-safe random characters (no '-' or '_' in the first 9, for a clean prefix)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    head = "".join(secrets.choice(alphabet) for _ in range(PREFIX_LENGTH - len(KEY_PREFIX)))
    tail = secrets.token_urlsafe(48)[: RANDOM_LENGTH - len(head)]
    return KEY_PREFIX + head + tail


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def hash_key(key: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), key.encode(), hashlib.sha256).hexdigest()


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 32 and len(key) <= 200


def verify_key(key: str, hashed_key: str) -> bool:
    """Constant-time comparison of a presented key with a stored HMAC."""
    return hmac.compare_digest(hash_key(key), hashed_key)
