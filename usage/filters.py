"""What a usage page or export is asked to show: the period, the filters, and whose traffic the viewer may see.

Parsing only — no queries beyond looking up the viewer's own keys. Every page, CSV export and /v1/usage goes
through `parse_period` / `parse_filters`, so "the same filters" mean the same rows everywhere. Periods are whole
UTC hours, because the rollup that answers every total is hourly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone

from apikeys.models import APIKey
from routing.tiers import TIERS
from usage.models import ENDPOINTS

PRESETS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_PRESET = "24h"
MAX_PERIOD = timedelta(days=400)
# Up to this long a chart has one bar per hour, beyond it one bar per day.
HOURLY_CHART_LIMIT = timedelta(days=3)
STATUS_CLASSES = {"2xx": 2, "4xx": 4, "5xx": 5}
MASTER = "master"
ENDPOINT_NAMES = tuple(name for name, _label in ENDPOINTS)
# The tier filter's value for calls that reached no route (their tier is empty).
NO_TIER = "none"


class FilterError(ValueError):
    """A query parameter could not be understood; the message says which and how to fix it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, on a whole UTC hour
    end: datetime  # exclusive, on a whole UTC hour
    preset: str  # one of PRESETS, or "custom"

    @property
    def bucket(self) -> str:
        """Chart bar width: "hour" or "day"."""
        return "hour" if self.end - self.start <= HOURLY_CHART_LIMIT else "day"

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)


@dataclass(frozen=True)
class UsageFilter:
    """The rows a view covers. `visible_key_ids` None means every row (staff); otherwise only these keys' rows."""

    period: Period
    visible_key_ids: tuple[int, ...] | None
    key: int | str | None = None  # an APIKey id, or "master"
    alias: str = ""
    policy: str = ""
    tier: str = ""
    provider: str = ""
    endpoint: str = ""  # one of usage.models.ENDPOINTS, or "" for every endpoint
    status: str = ""  # "", "2xx"/"4xx"/"5xx", or an exact code such as "429" (request log only)
    errors_only: bool = False

    @property
    def status_class(self) -> int | None:
        return STATUS_CLASSES.get(self.status)

    @property
    def status_code(self) -> int | None:
        return int(self.status) if self.status.isdigit() else None

    def query_items(self, **overrides) -> list[tuple[str, str]]:
        """The filters as query-string pairs (for links, pagination, CSV export), with `overrides` applied."""
        values = {
            "period": self.period.preset,
            "start": "" if self.period.preset != "custom" else _format(self.period.start),
            "end": "" if self.period.preset != "custom" else _format(self.period.end),
            "key": "" if self.key is None else str(self.key),
            "alias": self.alias,
            "policy": self.policy,
            "tier": self.tier,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "status": self.status,
            "errors": "1" if self.errors_only else "",
        }
        values.update({k: ("" if v is None else str(v)) for k, v in overrides.items()})
        return [(k, v) for k, v in values.items() if v != ""]


def _format(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M")


def floor_hour(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(when: datetime) -> datetime:
    floored = floor_hour(when)
    return floored if floored == when.astimezone(UTC) else floored + timedelta(hours=1)


def parse_moment(param: str, value: str, *, is_end: bool) -> datetime:
    """An ISO 8601 date or date-time (UTC unless an offset is given). A bare date as the end means the whole day."""
    value = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if is_end else moment
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise FilterError(
            param,
            f"'{param}' must be an ISO 8601 date or date-time such as 2026-01-31 or 2026-01-31T14:00Z; got {value!r}.",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ceil_hour(moment) if is_end else floor_hour(moment)


def parse_period(params, *, now: datetime | None = None, default_preset: str = DEFAULT_PRESET) -> Period:
    """A preset (`period=24h|7d|30d`, ending with the current hour) or a custom `start`/`end` range."""
    now = now or timezone.now()
    start_raw, end_raw = (params.get("start") or "").strip(), (params.get("end") or "").strip()
    preset = (params.get("period") or "").strip()
    if preset not in ("", "custom", *PRESETS):
        raise FilterError("period", f"'period' must be one of {', '.join(PRESETS)} or custom; got {preset!r}.")
    if preset in PRESETS or (not preset and not start_raw and not end_raw):
        preset = preset or default_preset
        end = floor_hour(now) + timedelta(hours=1)
        return Period(start=end - PRESETS[preset], end=end, preset=preset)
    end = parse_moment("end", end_raw, is_end=True) if end_raw else floor_hour(now) + timedelta(hours=1)
    start = parse_moment("start", start_raw, is_end=False) if start_raw else end - PRESETS[default_preset]
    if end <= start:
        raise FilterError("end", "'end' must be after 'start'.")
    if end - start > MAX_PERIOD:
        raise FilterError("start", f"A period may span at most {MAX_PERIOD.days} days.")
    return Period(start=start, end=end, preset="custom")


def visible_key_ids(user) -> tuple[int, ...] | None:
    """None for staff (all traffic); otherwise the ids of the keys this user owns."""
    if user.is_staff:
        return None
    return tuple(APIKey.objects.filter(owner=user).values_list("id", flat=True))


def parse_filters(params, user, *, now: datetime | None = None) -> UsageFilter:
    """Read the usage filters from query parameters for `user`. A key the user may not see raises KeyNotVisible."""
    visible = visible_key_ids(user)
    period = parse_period(params, now=now)
    key_raw = (params.get("key") or "").strip()
    key: int | str | None = None
    if key_raw == MASTER:
        if visible is not None:
            raise KeyNotVisible()
        key = MASTER
    elif key_raw:
        if not key_raw.isdigit():
            raise FilterError("key", f"'key' must be a key id or 'master'; got {key_raw!r}.")
        key = int(key_raw)
        if visible is not None and key not in visible:
            raise KeyNotVisible()
    status = (params.get("status") or "").strip().lower()
    if status and status not in STATUS_CLASSES and not re.fullmatch(r"[1-5]\d\d", status):
        raise FilterError("status", f"'status' must be 2xx, 4xx, 5xx or an HTTP status code; got {status!r}.")
    tier = (params.get("tier") or "").strip()
    if tier and tier not in (*TIERS, NO_TIER):
        raise FilterError("tier", f"'tier' must be free, internal, premium or none; got {tier!r}.")
    endpoint = (params.get("endpoint") or "").strip()
    if endpoint and endpoint not in ENDPOINT_NAMES:
        raise FilterError("endpoint", f"'endpoint' must be one of {', '.join(ENDPOINT_NAMES)}; got {endpoint!r}.")
    return UsageFilter(
        period=period,
        visible_key_ids=visible,
        key=key,
        endpoint=endpoint,
        alias=(params.get("alias") or "").strip(),
        policy=(params.get("policy") or "").strip(),
        tier=tier,
        provider=(params.get("provider") or "").strip(),
        status=status,
        errors_only=(params.get("errors") or "") in ("1", "on", "true", "yes"),
    )


def for_key(usage_filter: UsageFilter, key_id: int | str) -> UsageFilter:
    return replace(usage_filter, key=key_id)


class KeyNotVisible(Exception):
    """The viewer asked for a key that is not theirs: answered with a 404, never with its data."""
