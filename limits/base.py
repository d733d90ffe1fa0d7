"""What every limit shares: the store seam and its outage back-off, the 429 (`LimitExceeded`), the `Admission`
handed from `admit` to `settle`, the `Subject` a limit belongs to, the `Limit` interface, and the x-ratelimit-*
headers. Runs on the event loop: no database, no blocking call."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rainymodel_site.shared_state import Outage, state

if TYPE_CHECKING:
    from routing.snapshot import KeyInfo

log = logging.getLogger("limits")

WINDOW_S = 60  # the rpm/tpm window and the failed-authentication window

# After a failure the store is left alone this long: a silent Redis (no refusal, just a socket timeout) must not
# cost every limited request a timeout or several.
STORE_RETRY_S = 2.0
outage = Outage(STORE_RETRY_S)


def store():
    """The shared store; a seam so tests can run every limit on their own MemoryState/RedisState."""
    return state()


def utcnow() -> datetime:
    return datetime.now(UTC)


def store_failed(what: str, exc: Exception) -> None:
    """Leave the store alone for a while and say so (at most every 10 s per `what`): every limit fails open."""
    outage.failed()
    if outage.should_warn(what):
        log.error("shared state unreachable; %s not enforced (failing open): %s", what, exc)


class LimitExceeded(Exception):
    """A limit refused the request: answer 429 with `code`, `type`, `message` and `headers`."""

    status = 429

    def __init__(
        self,
        code: str,
        type: str,
        message: str,
        retry_after: float,
        headers: dict[str, str] | None = None,
        *,
        retry_useless: bool = False,
    ):
        super().__init__(message)
        self.code = code  # "rate_limit_exceeded" | "quota_exceeded"
        self.type = type  # "requests" | "tokens" | "insufficient_quota"
        self.message = message
        self.retry_after = max(0.0, float(retry_after))
        self.headers = dict(headers or {})
        # Which limit refused, set by `admit` (limits/__init__.py): `Limit.kind` and its subject's kind.
        self.kind = ""
        self.scope = ""
        # Whole seconds for Retry-After (RFC 9110); the openai SDK prefers the precise retry-after-ms.
        self.headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        self.headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        if retry_useless:
            # The openai SDK retries every 429 unless told not to; an exhausted quota or a request larger than the
            # whole tpm limit will not pass on a retry seconds later.
            self.headers["x-should-retry"] = "false"


@dataclass(frozen=True)
class Subject:
    """Whose limits these are: an API key (`kind="key"`) or the user owning it (`kind="user"`, issue 14: limits
    all the user's keys share, with counters of their own). `label` names it in logs."""

    kind: str
    id: int
    label: str

    @property
    def counter_id(self) -> str:
        """The part of a counter's name that says whose it is: the key id alone, as before subjects existed."""
        return str(self.id) if self.kind == "key" else f"{self.kind}:{self.id}"

    @property
    def whose(self) -> str:
        """For error messages: "this key's" or "your user's (all your keys together)"."""
        return "this key's" if self.kind == "key" else "your user's (all your keys together)"


class Limit:
    """One limit of one subject, for one request. `admit` calls, in this order and stopping at the first refusal:
    `counters()` (what to read, in one round trip for all limits), `check()` (refuse what is already used up,
    without writing), `reserve()` (take this request's share: a count, a slot), and `give_back()` on the ones
    that reserved when a later one refused. `settle()` then runs once after the call with its real tokens and
    cost. Each may raise SharedStateUnavailable (admit and settle fail open on it) or, in check/reserve,
    LimitExceeded. A limit keeps what it saw for the x-ratelimit-* headers (`usages()`)."""

    #: admit reserves in ascending rank (rate, tokens, quota requests, concurrency), after checking in list order
    reserve_rank = 0
    #: the name of this kind of limit in metrics (rainymodel_limit_rejections_total{kind})
    kind = ""
    subject: Subject

    def counters(self) -> list[str]:
        return []

    async def check(self, store, values: dict, admission: Admission) -> None:
        pass

    async def reserve(self, store, values: dict, admission: Admission) -> bool:
        """Take this request's share; True when there is something to give back."""
        return False

    async def give_back(self, store) -> None:
        pass

    async def settle(self, store, tokens: int, cost: float) -> None:
        pass

    def usages(self) -> list[tuple[str, float, float, float, bool]]:
        """[(kind "requests"/"tokens"/"cost", limit, used, seconds to reset, primary)] for the headers. A primary
        limit (rpm, tpm) fills its kind's headers whenever it is set; otherwise the tightest quota does."""
        return []


@dataclass
class Admission:
    """What `admit()` granted. Pass it to `settle()` exactly once, on every path."""

    key: KeyInfo  # the key admitted
    limits: tuple[Limit, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


# --- headers ------------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` format (Go's duration format): "0.5s", "1s", "6m0s", "1h2m3s"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def wait_words(seconds: float) -> str:
    """How long to wait, for people reading an error message: "45s", "6m0s", "11h46m", "3d4h"."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return duration(seconds)
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d{hours}h" if days else f"{hours}h{minutes}m"


def headers(limits) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens}: from rpm/tpm when set (the tighter of the key's and
    the user's), else from the tightest quota."""
    out: dict[str, str] = {}
    seen = [u for limit in limits for u in limit.usages()]
    for kind in ("requests", "tokens"):
        primary = [u for u in seen if u[0] == kind and u[4]]
        if primary:
            _, limit, used, reset, _ = min(primary, key=lambda u: u[1] - u[2])
        else:
            candidates = [(maximum - used, maximum, used, reset) for k, maximum, used, reset, p in seen if k == kind]
            if not candidates:
                continue
            _, limit, used, reset = min(candidates)
        out[f"x-ratelimit-limit-{kind}"] = str(int(limit))
        out[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(limit - used)))
        out[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return out


def refusal_headers(
    headers: dict[str, str], kind: str, limit: float | None, reset: float, remaining: float = 0
) -> dict[str, str]:
    """`headers` with the `kind` ("requests"/"tokens") triple replaced by the limit that refused the request, so
    a 429 never advertises an allowance the key cannot use (a quota 429 showing the full rpm allowance)."""
    headers = dict(headers)
    if limit is not None:
        headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
    headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(remaining)))
    headers[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return headers
