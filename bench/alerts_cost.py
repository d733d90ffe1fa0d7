"""What the alert hooks (alerts/events.py) add to one request (docs/observability.md, "Alerts").

Times, in one process and without Django, the calls the request path makes into alerts on every request: the end
of a call on a healthy alias (`call_finished`, once per call), a quota counter that moved without crossing a
threshold (`quota_used`, once per quota metric counted), and the rare path that queues an event (`notify`).

    .venv/bin/python bench/alerts_cost.py
"""

from __future__ import annotations

import sys
import timeit
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts import events  # noqa: E402


@dataclass
class Subject:
    kind: str = "key"
    id: int = 1
    label: str = "rm-benchkey00"


@dataclass
class Quota:
    subject: Subject = field(default_factory=Subject)
    period: str = "day"
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    end: datetime = datetime(2026, 1, 2, tzinfo=UTC)
    maxima: dict[str, float] = field(default_factory=lambda: {"requests": 1_000_000})


def ns_per_call(statement, number: int = 200_000) -> float:
    best = min(timeit.repeat(statement, number=number, repeat=5))
    return best / number * 1e9


def main() -> None:
    quota = Quota()
    events.failing_aliases = frozenset({"rainymodel/other"})

    def nothing(*args):
        return None

    rows = [
        ("(an empty function call, for scale)", lambda: nothing("rainymodel/auto", 200, "")),
        ("call_finished, healthy alias (every call)", lambda: events.call_finished("rainymodel/auto", 200, "")),
        ("quota_used, no threshold crossed (per metric)", lambda: events.quota_used(quota, "requests", 500, 1)),
    ]
    for name, statement in rows:
        print(f"{name:55s} {ns_per_call(statement):8.0f} ns")

    def crossing():
        events.quota_used(quota, "requests", 800_000, 1)
        events.queue.clear()

    print(f"{'quota_used, crossing 80 % (queues one event)':55s} {ns_per_call(crossing, 50_000):8.0f} ns")


if __name__ == "__main__":
    main()
