"""Pure: what one upstream attempt's result means for the request (SPEC §5.6's table).

`classify_failure` turns a failure (an HTTP status with its error code and Retry-After, or a transport failure)
into a `Decision`: retry the same route (after a wait), move to the next route, or answer the client with the
upstream's own error. It also names the reason (used in headers, logs and the breaker). No I/O here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# The reasons, spelled in routing/reasons.py; re-exported because callers name them as outcomes (`outcomes.TIMEOUT`).
from routing.reasons import (  # noqa: F401
    CONNECT_ERROR,
    CONTEXT_LENGTH_EXCEEDED,
    CREDITS_EXHAUSTED,
    HTTP_429,
    INVALID_RESPONSE,
    RESET,
    STREAM_INTERRUPTED,
    TIMEOUT,
    UPSTREAM_ERROR_EVENT,
    http,
)

RETRY = "retry"  # same route again, after `wait` seconds, while retries remain
NEXT = "next"  # move on to the next route
RETURN = "return"  # give the client the upstream's error as it is
CONTEXT = "context"  # context_length_exceeded: next route with a larger window, or return the error

SHORT_RETRY_AFTER_S = 5.0
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 4.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    reason: str
    wait: float | None = None  # for RETRY: seconds to wait first (None: exponential backoff)
    cooldown: float | None = None  # for the breaker: keep the route out this long (429 with a long Retry-After)
    counts_against_breaker: bool = True


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
            seconds = (when - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds)


def classify_status(status: int, error_code: str | None = None, retry_after: float | None = None) -> Decision:
    """An upstream HTTP error status (anything but 2xx)."""
    if status in (500, 502, 503, 504):
        return Decision(RETRY, http(status))
    if status == 429:
        if retry_after is None:
            return Decision(RETRY, HTTP_429)
        if retry_after <= SHORT_RETRY_AFTER_S:
            return Decision(RETRY, HTTP_429, wait=retry_after)
        return Decision(NEXT, HTTP_429, cooldown=retry_after)
    if status == 402:
        return Decision(NEXT, CREDITS_EXHAUSTED)
    if status in (401, 403, 404):
        return Decision(NEXT, http(status))
    if status == 400 and error_code == CONTEXT_LENGTH_EXCEEDED:
        return Decision(CONTEXT, CONTEXT_LENGTH_EXCEEDED, counts_against_breaker=False)
    if status in (400, 413, 422) or 400 <= status < 500:
        # The request itself is wrong (content filters included): the same body fails everywhere.
        return Decision(RETURN, http(status), counts_against_breaker=False)
    return Decision(RETRY, http(status))  # other 5xx


def classify_transport(kind: str) -> Decision:
    """A failure without an HTTP status: connect error, reset before headers, timeout, unusable body."""
    if kind in (CONNECT_ERROR, RESET):
        return Decision(RETRY, kind)
    if kind == TIMEOUT:
        return Decision(NEXT, TIMEOUT)  # a silent route is not retried
    return Decision(NEXT, kind)


def backoff_delay(retry_number: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**n)) for the n-th retry (0-based)."""
    uniform = rng.uniform if rng is not None else random.uniform
    return uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**retry_number)))


def looks_like_context_error(body: dict | None) -> bool:
    """Upstreams do not all use the code; some say it in the message."""
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    if error.get("code") == CONTEXT_LENGTH_EXCEEDED:
        return True
    message = str(error.get("message") or "").lower()
    return "context length" in message or "context_length" in message or "maximum context" in message


def estimate_tokens(text_chars: int) -> int:
    """A rough token count (about 4 characters a token) when the upstream reports no usage."""
    return max(1, (text_chars + 3) // 4) if text_chars else 0


def cost_usd(
    prompt_tokens: int, completion_tokens: int, input_price_per_mtok: float, output_price_per_mtok: float
) -> float:
    return (prompt_tokens * input_price_per_mtok + completion_tokens * output_price_per_mtok) / 1_000_000
