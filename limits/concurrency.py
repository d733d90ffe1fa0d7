"""`max_concurrent`: N slot keys `lim:conc:<subject>:<i>`, each taken with SET NX and a lease of
`RAINYMODEL_DEADLINE_S` + 60 s (longer than any request may take) and released by `settle`. A worker that dies
holding slots cannot leak them for longer than the lease; a counter could not offer that (its TTL would run out
under a busy key and leave it negative)."""

from __future__ import annotations

import secrets

from django.conf import settings

from limits.base import Limit, LimitExceeded, Subject, headers, refusal_headers

RETRY_AFTER_S = 1.0


def slot_counters(subject: Subject, max_concurrent: int | None) -> list[str]:
    return [f"lim:conc:{subject.counter_id}:{i}" for i in range(max_concurrent or 0)]


def lease_s() -> float:
    return float(settings.RAINYMODEL_DEADLINE_S) + 60.0


class Concurrency(Limit):
    reserve_rank = 3
    kind = "concurrency"

    def __init__(self, subject: Subject, max_concurrent: int):
        self.subject, self.limit = subject, max_concurrent
        self.slots = slot_counters(subject, max_concurrent)
        self.slot: str | None = None  # the slot this request holds
        self.lease: str | None = None  # the value written into it, so settle frees only its own

    def counters(self):
        return list(self.slots)

    async def reserve(self, store, values, admission) -> bool:
        lease = "lease-" + secrets.token_hex(8)  # not number-like, so Redis gives it back as the same str
        for slot in (s for s in self.slots if s not in values):
            if await store.add(slot, lease, lease_s()):
                self.slot, self.lease = slot, lease
                return True
        raise LimitExceeded(
            "rate_limit_exceeded",
            "requests",
            f"Too many concurrent requests: {self.subject.whose} limit is {self.limit} at a time.",
            RETRY_AFTER_S,
            refusal_headers(headers(admission.limits), "requests", None, RETRY_AFTER_S),
        )

    async def give_back(self, store) -> None:
        await self.settle(store, 0, 0.0)

    async def settle(self, store, tokens: int, cost: float) -> None:
        # Only our own lease: if this request outlived it, the slot may belong to another request by now.
        slot, self.slot = self.slot, None
        if slot and await store.get(slot) == self.lease:
            await store.delete(slot)
