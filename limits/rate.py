"""`rpm_limit`: requests per 60 s window, counted natively on the shared store (see the package docstring).

`lim:rpm:<subject>` counts requests in a window that starts with its first request. A request is admitted when its
increment is <= the limit, so under any concurrency exactly `rpm_limit` requests pass per window; a request that
a later limit refuses gives its count back."""

from __future__ import annotations

from limits.base import WINDOW_S, Limit, LimitExceeded, Subject, headers, refusal_headers, wait_words


def rpm_counter(subject: Subject) -> str:
    return f"lim:rpm:{subject.counter_id}"


class Rate(Limit):
    reserve_rank = 0
    kind = "rpm"

    def __init__(self, subject: Subject, rpm: int):
        self.subject, self.limit, self.counter = subject, rpm, rpm_counter(subject)
        self.count: int | None = None
        self.reset: float | None = None

    def counters(self):
        return [self.counter]

    async def reserve(self, store, values, admission) -> bool:
        count = int(values.get(self.counter) or 0)
        full = count >= self.limit  # already used up: refuse without counting
        if not full:
            # One store call at a time per request: redis.asyncio's pool refuses (rather than queues) past 100
            # connections per worker, so a burst must not multiply its connections.
            count = int(await store.incr(self.counter, 1, WINDOW_S))
            reset = await store.ttl(self.counter)
            full = count > self.limit
        else:
            reset = await store.ttl(self.counter)
        self.count, self.reset = count, reset or WINDOW_S
        if full:
            raise LimitExceeded(
                "rate_limit_exceeded",
                "requests",
                f"Rate limit reached: {self.subject.whose} limit of {self.limit} requests per minute. "
                f"Try again in {wait_words(self.reset)}.",
                self.reset,
                refusal_headers(headers(admission.limits), "requests", self.limit, self.reset),
            )
        return True

    async def give_back(self, store) -> None:
        value = await store.incr(self.counter, -1, WINDOW_S)
        if value is not None and value < 0:  # the window ended meanwhile; do not start one at -1
            await store.delete(self.counter)

    def usages(self):
        used = self.count or 0
        reset = WINDOW_S if self.reset is None and used else (self.reset or 0)
        return [("requests", self.limit, used, reset, True)]
