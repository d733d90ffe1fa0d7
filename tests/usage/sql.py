"""Independent SQL over RequestLog, for checking what the usage pages show. Deliberately shares no code with
usage.reports: if both agree, the rollup is right."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.db import connection

from usage.models import LATENCY_BUCKET_EDGES_MS


def _where(period, conditions: list[str], params: list) -> tuple[str, list]:
    ops = connection.ops
    clauses = ["created_at >= %s", "created_at < %s", *conditions]
    return " AND ".join(clauses), [
        ops.adapt_datetimefield_value(period.start),
        ops.adapt_datetimefield_value(period.end),
        *params,
    ]


def figures(period, conditions: Sequence[str] = (), params: Sequence[Any] = ()) -> dict:
    where, values = _where(period, list(conditions), list(params))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0), COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN fallback THEN 1 ELSE 0 END), 0) "
            f"FROM usage_requestlog WHERE {where}",
            values,
        )
        requests, prompt, completion, cost, errors, fallbacks = cursor.fetchone()
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": float(cost),
        "errors": errors,
        "fallbacks": fallbacks,
    }


def grouped(period, group_sql: str, conditions: Sequence[str] = (), params: Sequence[Any] = ()) -> dict:
    where, values = _where(period, list(conditions), list(params))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {group_sql}, COUNT(*), COALESCE(SUM(prompt_tokens + completion_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) "
            f"FROM usage_requestlog WHERE {where} GROUP BY {group_sql}",
            values,
        )
        return {
            row[0]: {"requests": row[1], "total_tokens": row[2], "cost_usd": float(row[3]), "errors": row[4]}
            for row in cursor.fetchall()
        }


def column_values(period, column: str, conditions: Sequence[str] = (), params: Sequence[Any] = ()) -> list:
    where, values = _where(period, list(conditions), list(params))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM usage_requestlog WHERE {where} AND {column} IS NOT NULL ORDER BY {column}", values
        )
        return [row[0] for row in cursor.fetchall()]


def exact_percentile(sorted_values: list, fraction: float):
    """Nearest-rank percentile."""
    return sorted_values[max(math.ceil(fraction * len(sorted_values)) - 1, 0)]


def bucket_bounds(value: float) -> tuple[float, float]:
    """[lower, upper] of the histogram bucket holding an exact value."""
    lower = 0
    for edge in LATENCY_BUCKET_EDGES_MS:
        if value < edge:
            return lower, edge
        lower = edge
    return lower, math.inf
