"""Realistic synthetic request-log rows for demos and benchmarks (`manage.py usage generate`).

Traffic follows the routing config in the database when there is one (aliases, their routes, tiers and prices),
otherwise a built-in catalogue shaped like routing/defaults.yaml. Rows go through `usage.writer.write_batch`, the
same code path as real traffic, so their rollups are exactly what the writer would have made. Never used by the
request path.
"""

from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from routing.models import Route
from routing.tiers import FREE, INTERNAL, PREMIUM
from usage.models import RequestLog
from usage.rollups import add_to_rollups

POLICIES = {"auto": (FREE, INTERNAL, PREMIUM), "free": (FREE, INTERNAL), "premium": (PREMIUM,)}
# Latency (ms) medians per tier, for a log-normal spread.
LATENCY_MEDIAN = {FREE: 1800, INTERNAL: 900, PREMIUM: 1400}
TTFT_MEDIAN = {FREE: 600, INTERNAL: 250, PREMIUM: 450}
# (status, error_code, share) of outcomes other than success.
FAILURES = (
    (429, "rate_limit_exceeded", 0.025),
    (502, "upstream_error", 0.015),
    (504, "upstream_timeout", 0.008),
    (401, "invalid_api_key", 0.006),
    (400, "missing_required_parameter", 0.006),
    (499, "client_disconnected", 0.005),
)


# The failures above that are refused before or by the limits (the rest were admitted, then failed upstream).
NOT_ADMITTED = {"rate_limit_exceeded", "invalid_api_key", "missing_required_parameter"}


@dataclass(frozen=True)
class SyntheticRoute:
    alias: str
    tier: str
    provider: str
    upstream_model: str
    input_price: Decimal
    output_price: Decimal


BUILTIN_ROUTES = (
    SyntheticRoute("rainymodel/auto", "free", "hf", "meta-llama/Llama-3.3-70B-Instruct", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/auto", "internal", "ollama-primary", "qwen2.5:14b", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/auto", "internal", "ollama-secondary", "qwen2.5:14b", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/auto", "premium", "openrouter", "openai/gpt-4o-mini", Decimal("0.15"), Decimal("0.60")),
    SyntheticRoute("rainymodel/chat", "free", "hf", "Qwen/Qwen2.5-72B-Instruct", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/chat", "internal", "ollama-primary", "llama3.1:8b", Decimal(0), Decimal(0)),
    SyntheticRoute(
        "rainymodel/chat", "premium", "openrouter", "anthropic/claude-3.5-haiku", Decimal("0.80"), Decimal("4.00")
    ),
    SyntheticRoute("rainymodel/code", "free", "hf", "Qwen/Qwen2.5-Coder-32B-Instruct", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/code", "internal", "ollama-primary", "qwen2.5-coder:14b", Decimal(0), Decimal(0)),
    SyntheticRoute("rainymodel/code", "premium", "openrouter", "openai/gpt-4o", Decimal("2.50"), Decimal("10.00")),
)


def configured_routes() -> list[SyntheticRoute]:
    """The routes in the database, or the built-in catalogue when there are none."""
    routes = [
        SyntheticRoute(
            r.alias.name,
            r.provider.tier,
            r.provider.name,
            r.upstream_model,
            r.input_price_per_mtok,
            r.output_price_per_mtok,
        )
        for r in Route.objects.select_related("alias", "provider").filter(enabled=True)
    ]
    return routes or list(BUILTIN_ROUTES)


class Generator:
    """Draws rows one at a time; `keys` is a list of (id, prefix) to spread traffic over (busiest first)."""

    def __init__(
        self,
        *,
        keys: list[tuple[int, str]],
        routes: list[SyntheticRoute],
        start: datetime,
        end: datetime,
        seed: int | None = None,
    ):
        self.random = random.Random(seed)
        self.keys = keys
        self.key_weights = [1 / (rank + 1) for rank in range(len(keys))]  # a few heavy users, a long tail
        self.start, self.span = start, (end - start).total_seconds()
        self.by_alias: dict[str, dict[str, list[SyntheticRoute]]] = {}
        for route in routes:
            self.by_alias.setdefault(route.alias, {}).setdefault(route.tier, []).append(route)
        self.aliases = sorted(self.by_alias)
        self.alias_weights = [1 / (rank + 1) for rank in range(len(self.aliases))]
        # Each key mostly uses one alias and one policy, as real clients do.
        self.habits: dict[int | None, tuple[str, str]] = {
            key_id: (self.random.choice(self.aliases), self.random.choice(list(POLICIES))) for key_id, _ in keys
        }
        self.failure_cut = []
        total = 0.0
        for status, code, share in FAILURES:
            total += share
            self.failure_cut.append((total, status, code))

    def _when(self, window: tuple[float, float]) -> datetime:
        # More traffic in working hours: accept a uniform draw with a probability that follows the UTC hour.
        low, high = window
        while True:
            moment = self.start + timedelta(seconds=self.span * (low + self.random.random() * (high - low)))
            if self.random.random() < 0.35 + 0.65 * math.sin(math.pi * moment.hour / 23) ** 2:
                return moment

    def batch(self, size: int, window: tuple[float, float]) -> list[dict]:
        """`size` rows inside `window` (fractions 0..1 of the period), oldest first — like the writer's batches,
        which hold a few seconds of traffic, so each batch touches few rollup rows."""
        rows = [self.row(window) for _ in range(size)]
        rows.sort(key=lambda row: row["created_at"])
        return rows

    def row(self, window: tuple[float, float] = (0.0, 1.0)) -> dict:
        r = self.random
        key_id, prefix = r.choices(self.keys, weights=self.key_weights)[0] if self.keys else (None, "")
        alias, policy = self.habits.get(key_id, (r.choice(self.aliases), "auto"))
        if r.random() < 0.2:
            alias = r.choices(self.aliases, weights=self.alias_weights)[0]
        if r.random() < 0.15:
            policy = r.choice(list(POLICIES))
        tiers = [t for t in POLICIES[policy] if t in self.by_alias[alias]] or list(self.by_alias[alias])
        # Most requests are answered by the first tier; the rest fall through to later ones.
        tier_index = 0
        while tier_index < len(tiers) - 1 and r.random() < 0.22:
            tier_index += 1
        route = r.choice(self.by_alias[alias][tiers[tier_index]])
        failure = r.random()
        status, error_code = 200, ""
        for cut, failed_status, code in self.failure_cut:
            if failure < cut:
                status, error_code = failed_status, code
                break
        stream = r.random() < 0.6
        row: dict[str, Any] = {
            "id": "req_" + secrets.token_hex(12),
            "created_at": self._when(window),
            "endpoint": "chat",
            "api_key_id": key_id,
            "key_prefix": prefix,
            "requested_model": alias,
            "alias": alias,
            "policy": policy,
            "tier": route.tier,
            "provider": route.provider,
            "upstream_model": route.upstream_model,
            "status": status,
            "error_code": error_code,
            # Refused by authentication, validation or the limits: never counted against a quota (as live).
            "admitted": error_code not in NOT_ADMITTED,
            "synthetic": True,
            "stream": stream,
            "latency_ms": int(r.lognormvariate(math.log(LATENCY_MEDIAN[route.tier]), 0.6)),
            "ttft_ms": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "usage_estimated": False,
            "cost_usd": Decimal(0),
            "attempts": [],
            "fallback": tier_index > 0,
            "client_ip": f"10.0.{r.randint(0, 3)}.{r.randint(1, 254)}",
            "user_agent": r.choice(("OpenAI/Python 1.54.0", "OpenAI/JS 4.67.0", "curl/8.5.0")),
        }
        if status in (401, 400):  # rejected before routing: no route, no tokens
            row.update(tier="", provider="", upstream_model="", latency_ms=r.randint(1, 5), fallback=False)
            if status == 401:
                row.update(api_key_id=None, key_prefix="", policy="")
            return row
        if status == 200:
            prompt = int(r.lognormvariate(math.log(600), 0.9))
            completion = int(r.lognormvariate(math.log(220), 0.8))
            row.update(
                prompt_tokens=prompt,
                completion_tokens=completion,
                usage_estimated=r.random() < 0.03,
                cost_usd=((prompt * route.input_price + completion * route.output_price) / Decimal(1_000_000)).quantize(
                    Decimal("0.00000001")
                ),
            )
            if stream:
                row["ttft_ms"] = min(int(r.lognormvariate(math.log(TTFT_MEDIAN[route.tier]), 0.5)), row["latency_ms"])
        row["attempts"] = [
            {
                "provider": route.provider,
                "upstream_model": route.upstream_model,
                "outcome": "ok" if status == 200 else error_code,
                "status": status,
                "ms": row["latency_ms"],
            }
        ]
        return row


def write_rows(rows: list[dict]) -> None:
    """Insert synthetic rows and count them into the rollups, in one transaction.

    Bypasses the ORM's per-field preparation (the slow part of bulk_create at millions of rows): COPY on
    PostgreSQL, one executemany elsewhere. The rollups go through `add_to_rollups`, exactly as for real traffic.
    """
    fields = [f for f in RequestLog._meta.concrete_fields]
    columns = [f.column for f in fields if f.column is not None]  # every concrete field has its column
    names = [f.attname for f in fields]
    ops = connection.ops
    postgres = connection.vendor == "postgresql"
    values = []
    for row in rows:
        record = []
        for name in names:
            value = row.get(name)
            if name == "attempts":
                value = json.dumps(value or [])
            elif name == "created_at" and not postgres:
                value = ops.adapt_datetimefield_value(value)
            elif name == "cost_usd":
                value = str(value or 0)
            record.append(value)
        values.append(record)
    table = ops.quote_name(RequestLog._meta.db_table)
    column_list = ", ".join(ops.quote_name(c) for c in columns)
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for record in values:
                    copy.write_row(record)
        else:
            cursor.executemany(
                f"INSERT INTO {table} ({column_list}) VALUES ({', '.join(['%s'] * len(columns))})", values
            )
        add_to_rollups(rows)
