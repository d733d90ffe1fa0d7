"""The attempt loop (SPEC §5.6), the one place that walks a chain of routes: breaker claims (per route and per
key, `breaker.try_acquire(route, key)`), retries with backoff or the upstream's short Retry-After, a re-claim
before each retry, the call's deadline, context-length skipping, and the notes for the final 502/503/504.

It is used by the first attempt of every endpoint and by a stream's mid-stream continuation (relay.py). The
caller supplies `attempt(route) -> result`, which raises `upstream.AttemptFailed` on failure; the loop records
every attempt on the Call (`Call.record_attempt`) and the breaker outcome, and returns `(route, result)` from the
first attempt that succeeds.

`rescue=True` (a continuation after the client already has part of the answer): the upstream's client errors
never replace the original failure, so RETURN and CONTEXT move on to the next route, and running out of routes
returns None instead of raising.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rainymodel_site import error_codes as codes
from rainymodel_site import tracing
from rainymodel_site.api_errors import ApiError
from routing.proxy import breaker, outcomes
from routing.proxy.call import Call
from routing.proxy.chain import skip_for_context
from routing.proxy.upstream import AttemptFailed
from routing.snapshot import RouteInfo

sleep = asyncio.sleep  # the one wait of the loop; unit tests swap it to see the waits without spending them


class UpstreamClientError(Exception):
    """The upstream says the request itself is wrong: its status and body go back to the client unchanged."""

    def __init__(self, failed: AttemptFailed):
        super().__init__(failed.decision.reason)
        self.failed = failed


async def run_attempts(
    call: Call,
    queue: list[RouteInfo],
    attempt: Callable[[RouteInfo], Awaitable[Any]],
    *,
    retries: bool = True,
    rescue: bool = False,
    ok_outcome: Callable[[Any], str] | None = None,
) -> tuple[RouteInfo, Any] | None:
    """Try the routes of `queue` in order (popping them: what is left stays in `queue` for a later call).

    `retries=False`: one attempt per route. `ok_outcome(result)`: the outcome recorded for a success ("ok")."""
    context_failure: AttemptFailed | None = None
    while queue and time.monotonic() < call.deadline:
        route = queue.pop(0)
        if not await breaker.try_acquire(route, call.key):
            call.skipped.append(route.label)
            continue
        tries = 0
        while True:
            started = time.monotonic()
            if call.trace is not None:
                tracing.attempt_started(call, route)
            try:
                result = await attempt(route)
            except AttemptFailed as failed:
                decision = failed.decision
                call.record_attempt(
                    route, decision.reason, failed.status, started=started, detail=failed.detail or None
                )
                if decision.counts_against_breaker:
                    await breaker.record_failure(route, decision.reason, decision.cooldown, key=call.key)
                if decision.action == outcomes.RETURN and not rescue:
                    raise UpstreamClientError(failed) from None
                if decision.action == outcomes.CONTEXT:
                    context_failure = failed
                    queue[:] = skip_for_context(queue, route)
                    break
                if retries and decision.action == outcomes.RETRY and tries < route.provider.max_retries:
                    wait = decision.wait if decision.wait is not None else outcomes.backoff_delay(tries)
                    if time.monotonic() + wait < call.deadline:
                        await sleep(wait)
                        tries += 1
                        # A half-open probe gets one attempt: its failure re-opened the breaker, and another
                        # worker's failures may have opened it meanwhile.
                        if await breaker.try_acquire(route, call.key):
                            continue
                break
            call.record_attempt(route, ok_outcome(result) if ok_outcome else "ok", 200, started=started)
            await breaker.record_success(route, call.key)
            return route, result
    if rescue:
        return None
    if context_failure is not None:
        raise UpstreamClientError(context_failure)
    raise all_failed(call)


def all_failed(call: Call) -> ApiError:
    notes = failure_notes(call)
    if not call.attempts:
        return ApiError(
            503,
            codes.NO_AVAILABLE_ROUTE,
            f"No route was available to try (all are cooling down).{notes}",
            headers={"Retry-After": "1"},
        )
    reasons = ", ".join(f"{a.label} ({a.outcome})" for a in call.attempts)
    if all(a.outcome == outcomes.TIMEOUT for a in call.attempts):
        return ApiError(504, codes.UPSTREAM_TIMEOUT, f"Every upstream timed out: {reasons}.{notes}")
    return ApiError(502, codes.ALL_UPSTREAMS_FAILED, f"All upstream routes failed: {reasons}.{notes}")


def failure_notes(call: Call) -> str:
    """What an operator can act on when no route answered: providers of the chain whose secret variable is not set
    on this server, and routes skipped because their breaker was open. Names only, never URLs or secrets."""
    providers = {route.provider.name: route.provider for route in call.considered}
    notes = [f" {p.secret_unset_message}." for p in providers.values() if p.secret_unset]
    if call.skipped:
        notes.append(f" Skipped (breaker open): {', '.join(dict.fromkeys(call.skipped))}.")
    return "".join(notes)
