"""`tpm_limit`: tokens per 60 s window. `lim:tpm:<subject>` sums real tokens (added by `settle`); `admit` refuses
when the tokens already used plus this request's estimate exceed the limit. Requests in flight are not reserved, so
concurrent requests can overshoot by their own size (bounded by `max_concurrent` when set)."""

from __future__ import annotations

from limits.base import WINDOW_S, Limit, LimitExceeded, Subject, headers, refusal_headers, wait_words


def tpm_counter(subject: Subject) -> str:
    return f"lim:tpm:{subject.counter_id}"


class Tokens(Limit):
    reserve_rank = 1
    kind = "tpm"

    def __init__(self, subject: Subject, tpm: int, estimate: int):
        self.subject, self.limit, self.estimate, self.counter = subject, tpm, estimate, tpm_counter(subject)
        self.used: int | None = None
        self.reset: float | None = None

    def counters(self):
        return [self.counter]

    async def check(self, store, values, admission) -> None:
        self.used = int(values.get(self.counter) or 0)
        estimate, limit = self.estimate, self.limit
        if estimate > limit or self.used + estimate > limit:
            self.reset = await store.ttl(self.counter) or WINDOW_S
            if estimate > limit:
                message = (
                    f"Request too large: about {estimate} tokens, more than {self.subject.whose} limit of "
                    f"{limit} tokens per minute."
                )
            else:
                message = (
                    f"Rate limit reached: {self.used} of {self.subject.whose} {limit} tokens per minute used; this "
                    f"request needs about {estimate} more. Try again in {wait_words(self.reset)}."
                )
            raise LimitExceeded(
                "rate_limit_exceeded",
                "tokens",
                message,
                self.reset,
                refusal_headers(headers(admission.limits), "tokens", limit, self.reset, limit - self.used),
                retry_useless=estimate > limit,
            )

    async def reserve(self, store, values, admission) -> bool:
        # Nothing to take (tokens are counted when known, by settle); only the reset for the headers.
        self.reset = await store.ttl(self.counter) if self.used else 0
        return False

    async def settle(self, store, tokens: int, cost: float) -> None:
        if tokens:
            await store.incr(self.counter, tokens, WINDOW_S)

    def usages(self):
        used = self.used or 0
        reset = WINDOW_S if self.reset is None and used else (self.reset or 0)
        return [("tokens", self.limit, used, reset, True)]
