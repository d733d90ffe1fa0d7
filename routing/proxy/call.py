"""One call as the request path sees it (SPEC §5): who asked, what was tried (`Attempt`s), what answered, and the
one RequestLog row it becomes. `Call.finish` is reached on every path and is idempotent, so every /v1/ call keeps
exactly one row. The attempt loop (loop.py) and the stream relay (relay.py) write their attempts here."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

import limits
from alerts import events as alerts
from limits import Admission
from rainymodel_site import log_lines, metrics, tracing
from rainymodel_site.request_ids import request_id_of
from routing.proxy import outcomes
from routing.proxy.validation import client_ip
from routing.snapshot import AliasInfo, KeyInfo, PolicyInfo, RouteInfo
from usage import writer

OK_OUTCOMES = ("ok", "continued", "restarted")


@dataclass
class AttemptUsage:
    """Tokens one upstream attempt reported (or None) and the route that served it."""

    route: RouteInfo
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    completion_chars: int = 0


@dataclass
class Attempt:
    """One upstream attempt. `as_log()` is its RequestLog.attempts entry: provider, upstream_model, outcome, status,
    ms, and detail only when there is one (the JSON shape the usage pages and admin read)."""

    provider: str
    upstream_model: str
    outcome: str
    status: int | None
    ms: int | None
    detail: str | None = None
    tier: str = ""  # for the metrics (rainymodel_site/metrics.py); not logged
    seconds: float | None = None  # `ms` before rounding, for the metrics' millisecond buckets

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.upstream_model}"

    def as_log(self) -> dict:
        entry = {
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "outcome": self.outcome,
            "status": self.status,
            "ms": self.ms,
        }
        if self.detail:
            entry["detail"] = self.detail
        return entry


@dataclass
class Call:
    """Everything known about one call: drives the response headers and its RequestLog row."""

    request_id: str
    client_request_id: bool
    started: float
    created_at: datetime
    deadline: float
    client_ip: str | None
    user_agent: str
    endpoint: str = "chat"  # RequestLog.endpoint: which API operation this call is
    key: KeyInfo | None = None
    requested_model: str = ""
    alias: AliasInfo | None = None
    policy: PolicyInfo | None = None
    stream: bool = False
    max_tokens: int | None = None  # the most output tokens the client asked for, if it said (traces)
    attempts: list[Attempt] = field(default_factory=list)
    route: RouteInfo | None = None
    fallback_reason: str | None = None
    status: int = 0
    error_code: str = ""
    ttft_ms: int | None = None
    latency_ms: int | None = None
    usages: list[AttemptUsage] = field(default_factory=list)
    prompt_estimate: int = 0
    admission: Admission | None = None
    limit_headers: dict[str, str] = field(default_factory=dict)
    considered: list[RouteInfo] = field(default_factory=list)  # the chain before breakers, for error messages
    skipped: list[str] = field(default_factory=list)  # routes left out because their breaker was open
    finished: bool = False
    trace: tracing.CallTrace | None = None  # its spans, when tracing is on (rainymodel_site/tracing.py)

    @classmethod
    def begin(cls, request) -> Call:
        now = time.monotonic()
        request_id, given = request_id_of(request)
        return cls(
            request_id=request_id,
            client_request_id=given,
            started=now,
            created_at=datetime.now(UTC),
            deadline=now + settings.RAINYMODEL_DEADLINE_S,
            client_ip=client_ip(request.META.get("REMOTE_ADDR")),
            user_agent=request.headers.get("user-agent", "")[:300],
            trace=tracing.begin(request) if tracing.enabled else None,
        )

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def record_attempt(
        self,
        route: RouteInfo,
        outcome: str,
        status: int | None,
        *,
        started: float | None = None,
        detail: str | None = None,
        replace_last: bool = False,
    ) -> None:
        """Note one upstream attempt; `replace_last` updates the latest one (a stream that broke later)."""
        if replace_last and self.attempts:
            last = self.attempts[-1]
            last.outcome, last.status = outcome, status
            if detail:
                last.detail = detail
            self.fallback_reason = outcome
            if self.trace is not None:
                tracing.attempt_recorded(self, route, replace_last=True)
            return
        seconds = time.monotonic() - started if started is not None else None
        self.attempts.append(
            Attempt(
                provider=route.provider.name,
                upstream_model=route.upstream_model,
                outcome=outcome,
                status=status,
                ms=int(seconds * 1000) if seconds is not None else None,
                detail=detail or None,
                tier=route.tier,
                seconds=seconds,
            )
        )
        if outcome not in OK_OUTCOMES:
            self.fallback_reason = outcome
        if self.trace is not None:
            tracing.attempt_recorded(self, route, replace_last=False)

    @property
    def tried(self) -> list[str]:
        return list(dict.fromkeys(a.label for a in self.attempts))

    def tokens(self) -> tuple[int, int, bool, float]:
        """(prompt, completion, estimated, cost) summed over the attempts that produced output."""
        prompt = completion = 0
        estimated = False
        cost = 0.0
        for usage in self.usages:
            if usage.prompt_tokens is None or usage.completion_tokens is None:
                estimated = True
                p = self.prompt_estimate
                c = outcomes.estimate_tokens(usage.completion_chars)
            else:
                p, c = int(usage.prompt_tokens), int(usage.completion_tokens)
            prompt += p
            completion += c
            cost += outcomes.cost_usd(p, c, usage.route.input_price_per_mtok, usage.route.output_price_per_mtok)
        return prompt, completion, estimated, cost

    def headers(self) -> dict[str, str]:
        route = self.route
        h = {
            "x-request-id": self.request_id,
            "x-rainymodel-route": route.tier if route else "error",
            "x-rainymodel-upstream": route.provider.kind if route else "none",
            "x-rainymodel-attempts": str(len(self.attempts)),
            "x-rainymodel-latency-ms": str(self.latency_ms if self.latency_ms is not None else self.elapsed_ms()),
        }
        if route:
            h["x-rainymodel-provider"] = route.provider.name
            h["x-rainymodel-model"] = route.upstream_model
        if self.alias:
            h["x-rainymodel-alias"] = self.alias.name
        if self.policy:
            h["x-rainymodel-policy"] = self.policy.name
        if self.fallback_reason and self.attempts:
            h["x-rainymodel-fallback-reason"] = self.fallback_reason
        if self.attempts:
            h["x-rainymodel-tried"] = ",".join(self.tried)
        h.update(self.limit_headers)
        return h

    async def finish(self, status: int, error_code: str = "") -> None:
        """Settle limits and queue the log row. Reached exactly once per call, on every path."""
        if self.finished:
            return
        self.finished = True
        self.status = status
        self.error_code = error_code
        prompt, completion, estimated, cost = self.tokens()
        if self.admission is not None:
            try:
                await asyncio.shield(limits.settle(self.admission, tokens=prompt + completion, cost_usd=cost))
            except asyncio.CancelledError:
                pass
        route = self.route
        first_label = self.tried[0] if self.attempts else None
        writer.enqueue(
            row := {
                "id": self.request_id,
                "_client_request_id": self.client_request_id,
                "created_at": self.created_at,
                "endpoint": self.endpoint,
                "api_key_id": self.key.id if self.key else None,
                "key_prefix": self.key.prefix if self.key else "",
                "requested_model": _loggable(self.requested_model, 200),
                "alias": self.alias.name if self.alias else "",
                "policy": self.policy.name if self.policy else "",
                "tier": route.tier if route else "",
                "provider": route.provider.name if route else "",
                "upstream_model": route.upstream_model if route else "",
                "status": status,
                "error_code": error_code,
                "admitted": self.admission is not None,  # passed the limits: what quotas count (limits)
                "stream": self.stream,
                "latency_ms": self.elapsed_ms(),
                "ttft_ms": self.ttft_ms,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "usage_estimated": estimated,
                "cost_usd": round(cost, 8),
                "attempts": [a.as_log() for a in self.attempts],
                "fallback": bool(route and first_label and first_label != route.label),
                "client_ip": self.client_ip,
                "user_agent": _loggable(self.user_agent, 300),
            }
        )
        # After the row is queued: nothing here can cost the call its log row.
        alerts.call_finished(self.alias.name if self.alias else None, status, error_code)
        metrics.record_call(row, self.attempts, time.monotonic() - self.started)
        if self.trace is not None:
            tracing.finish(self, row)
        if log_lines.enabled:
            log_lines.emit(self, row)


def _loggable(text: str, limit: int) -> str:
    """Client-chosen text as the log can store it: PostgreSQL text refuses NUL characters."""
    return text.replace("\x00", "\ufffd")[:limit]
