"""The immutable in-process view of routing config and API keys that the request path reads.

The request path never queries the database: it calls `current()` and gets plain frozen dataclasses. A daemon
thread per process polls the shared config version (shared state when Redis is configured, else the database
row) every `RAINYMODEL_SNAPSHOT_POLL_S` and rebuilds the snapshot when it moved; every admin save, key change and
`routing import` bumps that version (routing/config_version.py). When the shared store is unreachable the worker
keeps serving its last snapshot, logs it, and `/health/ready` reports it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connections, transaction

from apikeys.models import APIKey, Quota, UserLimits, UserQuota
from rainymodel_site.shared_state import SharedStateUnavailable
from routing import config_version
from routing.config_version import read_version
from routing.models import Alias, Policy, Provider, Route, RoutingSettings

log = logging.getLogger(__name__)
# An unknown API key triggers at most one version check per this many seconds per process (see `catch_up`).
CATCH_UP_INTERVAL_S = 0.1
CATCH_UP_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    kind: str
    tier: str
    base_url: str
    api_key: str  # resolved from api_key_env when the snapshot is built; never logged
    extra_headers: tuple[tuple[str, str], ...]
    enabled: bool
    connect_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    request_timeout_s: float
    max_retries: int
    breaker_failures: int
    breaker_cooldown_s: float
    credit_cooldown_s: float
    api_key_env: str = ""  # the variable `api_key` is read from: its name may be shown, its value never

    @property
    def secret_unset(self) -> bool:
        """It names a secret variable that this server's environment does not have (or has empty)."""
        return bool(self.api_key_env) and not self.api_key

    @property
    def secret_unset_message(self) -> str:
        return f"{self.name}: {self.api_key_env} is not set on the server"


@dataclass(frozen=True, slots=True)
class RouteInfo:
    id: int
    alias: str
    provider: ProviderInfo
    upstream_model: str
    position: int
    weight: int
    enabled: bool
    context_window: int | None
    supports_prefill: bool
    input_price_per_mtok: float
    output_price_per_mtok: float
    # The endpoints (routing.models.Endpoint values) this route serves; empty = every endpoint.
    endpoints: frozenset[str] = frozenset()

    @property
    def tier(self) -> str:
        return self.provider.tier

    def serves(self, endpoint: str) -> bool:
        """Whether this route may be tried for `endpoint` ("chat", "embeddings", "completions")."""
        return not self.endpoints or endpoint in self.endpoints

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class AliasInfo:
    name: str
    description: str
    enabled: bool
    listed: bool
    default_policy: str | None
    routes: tuple[RouteInfo, ...]
    created: int

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints at least one of its routes is configured for (enabled or not), in `Endpoint` order; what
        `/v1/models` shows and what `chain.chain_for_endpoint` refuses outside of."""
        from routing.models import Endpoint

        return tuple(e for e in Endpoint.values if any(r.serves(e) for r in self.routes))


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    name: str
    tiers: tuple[str, ...]
    is_default: bool


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    period: str
    max_requests: int | None
    max_tokens: int | None
    max_cost_usd: float | None


@dataclass(frozen=True, slots=True)
class UserLimitsInfo:
    """The limits all keys of one user share (apikeys.UserLimits), carried by each of the user's keys."""

    user_id: int
    username: str
    rpm_limit: int | None
    tpm_limit: int | None
    max_concurrent: int | None
    quotas: tuple[QuotaInfo, ...]

    @property
    def has_limits(self) -> bool:
        return bool(self.rpm_limit or self.tpm_limit or self.max_concurrent or self.quotas)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int | None  # None for the master key
    name: str
    prefix: str
    hashed_key: str
    expires_at: datetime | None
    revoked: bool
    allowed_aliases: frozenset[str]
    allowed_policies: tuple[str, ...]  # lower-case, in the key's order: the first is its fallback default
    default_policy: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    max_concurrent: int | None
    quotas: tuple[QuotaInfo, ...]
    # After a rotation: the replaced secret's HMAC, accepted until `previous_valid_until` (apikeys/auth.py).
    previous_hashed_key: str = ""
    previous_valid_until: datetime | None = None
    owner_limits: UserLimitsInfo | None = None  # the owner's shared limits, when the owner has any

    @property
    def is_master(self) -> bool:
        return self.id is None

    @property
    def has_limits(self) -> bool:
        return bool(
            self.rpm_limit
            or self.tpm_limit
            or self.max_concurrent
            or self.quotas
            or (self.owner_limits is not None and self.owner_limits.has_limits)
        )


MASTER_KEY_INFO = KeyInfo(
    id=None,
    name="master",
    prefix="master",
    hashed_key="",
    expires_at=None,
    revoked=False,
    allowed_aliases=frozenset(),
    allowed_policies=(),
    default_policy=None,
    rpm_limit=None,
    tpm_limit=None,
    max_concurrent=None,
    quotas=(),
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    providers: dict[str, ProviderInfo]
    aliases: dict[str, AliasInfo]
    policies: dict[str, PolicyInfo]  # by lower-case name
    default_policy: str | None
    catch_all_alias: str | None
    keys_by_prefix: dict[str, KeyInfo]
    built_at: float = field(default_factory=time.time)


def build_snapshot(version: int) -> Snapshot:
    """Read the whole configuration in a handful of queries. Runs in the refresher thread (or at startup)."""
    with transaction.atomic():
        providers = {}
        for p in Provider.objects.all():
            providers[p.name] = ProviderInfo(
                name=p.name,
                kind=p.kind,
                tier=p.tier,
                base_url=p.base_url.rstrip("/"),
                api_key=os.environ.get(p.api_key_env, "") if p.api_key_env else "",
                api_key_env=p.api_key_env,
                extra_headers=tuple((str(k), str(v)) for k, v in (p.extra_headers or {}).items()),
                enabled=p.enabled,
                connect_timeout_s=p.connect_timeout_s,
                first_token_timeout_s=p.first_token_timeout_s,
                idle_timeout_s=p.idle_timeout_s,
                request_timeout_s=p.request_timeout_s,
                max_retries=p.max_retries,
                breaker_failures=p.breaker_failures,
                breaker_cooldown_s=p.breaker_cooldown_s,
                credit_cooldown_s=p.credit_cooldown_s,
            )
        provider_names = dict(Provider.objects.values_list("id", "name"))
        policy_names: dict[int | None, str] = dict(Policy.objects.values_list("id", "name"))  # .get(None): None
        routes_by_alias: dict[int, list[RouteInfo]] = {}
        for r in Route.objects.order_by("position", "id"):
            routes_by_alias.setdefault(r.alias_id, []).append(
                RouteInfo(
                    id=r.id,
                    alias="",
                    provider=providers[provider_names[r.provider_id]],
                    upstream_model=r.upstream_model,
                    position=r.position,
                    weight=r.weight,
                    enabled=r.enabled,
                    context_window=r.context_window,
                    supports_prefill=r.supports_prefill,
                    input_price_per_mtok=float(r.input_price_per_mtok),
                    output_price_per_mtok=float(r.output_price_per_mtok),
                    endpoints=frozenset(r.endpoints or ()),
                )
            )
        aliases = {}
        for a in Alias.objects.all():
            aliases[a.name] = AliasInfo(
                name=a.name,
                description=a.description,
                enabled=a.enabled,
                listed=a.listed,
                default_policy=policy_names.get(a.default_policy_id),
                routes=tuple(replace(r, alias=a.name) for r in routes_by_alias.get(a.id, ())),
                created=1735689600,  # /v1/models wants a number; aliases keep no creation date
            )
        policies = {
            p.name.lower(): PolicyInfo(name=p.name, tiers=tuple(p.tiers), is_default=p.is_default)
            for p in Policy.objects.all()
        }
        default_policy = next((p.name for p in policies.values() if p.is_default), None)
        routing_settings = RoutingSettings.objects.filter(pk=1).select_related("catch_all_alias").first()
        catch_all = (
            routing_settings.catch_all_alias.name if routing_settings and routing_settings.catch_all_alias else None
        )

        quotas: dict[int, list[QuotaInfo]] = {}
        for q in Quota.objects.all():
            quotas.setdefault(q.api_key_id, []).append(_quota_info(q))
        user_quotas: dict[int, list[QuotaInfo]] = {}
        for uq in UserQuota.objects.all():
            user_quotas.setdefault(uq.user_limits_id, []).append(_quota_info(uq))
        owner_limits: dict[int, UserLimitsInfo] = {}
        for ul in UserLimits.objects.select_related("user"):
            info = UserLimitsInfo(
                user_id=ul.user_id,
                username=ul.user.get_username(),
                rpm_limit=ul.rpm_limit,
                tpm_limit=ul.tpm_limit,
                max_concurrent=ul.max_concurrent,
                quotas=tuple(user_quotas.get(ul.id, ())),
            )
            if info.has_limits:
                owner_limits[ul.user_id] = info
        keys = {}
        for k in APIKey.objects.all():
            keys[k.prefix] = KeyInfo(
                id=k.id,
                name=k.name,
                prefix=k.prefix,
                hashed_key=k.hashed_key,
                expires_at=k.expires_at,
                revoked=k.revoked_at is not None,
                allowed_aliases=frozenset(k.allowed_aliases or ()),
                allowed_policies=tuple(dict.fromkeys(p.lower() for p in (k.allowed_policies or ()))),
                default_policy=policy_names.get(k.default_policy_id),
                rpm_limit=k.rpm_limit,
                tpm_limit=k.tpm_limit,
                max_concurrent=k.max_concurrent,
                quotas=tuple(quotas.get(k.id, ())),
                previous_hashed_key=k.previous_hashed_key,
                previous_valid_until=k.previous_valid_until,
                owner_limits=owner_limits.get(k.owner_id) if k.owner_id is not None else None,
            )
    return Snapshot(
        version=version,
        providers=providers,
        aliases=aliases,
        policies=policies,
        default_policy=default_policy,
        catch_all_alias=catch_all,
        keys_by_prefix=keys,
    )


# --- the holder -------------------------------------------------------------------------------------------------


class _Holder:
    def __init__(self):
        self.snapshot: Snapshot | None = None
        self.bumps_seen = 0  # config_version.local_bumps when the snapshot was last built
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.shared_state_error: str | None = None
        self.last_check = 0.0
        self.secrets_checked = False
        self.catch_up_lock = threading.Lock()
        self.catch_up: Future | None = None
        self.catch_up_started = float("-inf")
        self.catch_up_checks = 0


_holder = _Holder()


def current() -> Snapshot:
    """The current snapshot. Only the very first call in a process builds it (before the refresher runs);
    call `ensure_loaded()` at startup so the request path never does."""
    snap = _holder.snapshot
    if snap is None:
        snap = refresh()
    return snap


def status() -> dict:
    snap = _holder.snapshot
    return {
        "loaded": snap is not None,
        "version": snap.version if snap else None,
        "age_s": round(time.time() - snap.built_at, 3) if snap else None,
        "shared_state_error": _holder.shared_state_error,
    }


def refresh() -> Snapshot:
    """Rebuild the snapshot now from the database (blocking; never on the event loop)."""
    with _holder.lock:
        bumps = config_version.local_bumps
        try:
            version = read_version()
            _holder.shared_state_error = None
        except SharedStateUnavailable as exc:
            _holder.shared_state_error = str(exc)
            version = -1
        snap = build_snapshot(version)
        _holder.snapshot = snap
        _holder.bumps_seen = bumps
        return snap


def poll_once() -> None:
    """Check the shared config version once and rebuild the snapshot if it moved."""
    try:
        version = read_version()
        if _holder.shared_state_error:
            log.warning("shared state reachable again; config version checks resume")
        _holder.shared_state_error = None
    except SharedStateUnavailable as exc:
        if not _holder.shared_state_error:
            log.error("shared state unreachable, serving the last config snapshot: %s", exc)
        _holder.shared_state_error = str(exc)
        return
    snap = _holder.snapshot
    if snap is None or snap.version != version or _holder.bumps_seen != config_version.local_bumps:
        refresh()


# One thread, so at most one check is ever in flight in this process; it closes its connections after each check
# (back to the pool on PostgreSQL) so it holds none between the rare checks.
_catch_up_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rainymodel-catch-up")


def _catch_up_check() -> None:
    try:
        _holder.catch_up_checks += 1
        poll_once()
    except Exception:  # an unknown key is then refused as usual; the refresher keeps trying on its own
        log.exception("config version check for an unknown API key failed")
    finally:
        connections.close_all()


def _start_catch_up() -> tuple[Future | None, float]:
    """(the check in flight or a new one, the monotonic time it started), or (None, seconds until one may start)."""
    with _holder.catch_up_lock:
        running = _holder.catch_up
        if running is not None and not running.done():
            return running, _holder.catch_up_started
        now = time.monotonic()
        wait = _holder.catch_up_started + CATCH_UP_INTERVAL_S - now
        if wait > 0:
            return None, wait
        _holder.catch_up_started = now
        _holder.catch_up = _catch_up_executor.submit(_catch_up_check)
        return _holder.catch_up, now


async def catch_up(seen: Snapshot) -> Snapshot | None:
    """A request named an API key that `seen` does not hold: it may have been created a moment ago, before this
    worker's poller noticed. Check the shared config version (rebuilding the snapshot if it moved) and return the
    newer snapshot, or None when there is none and the key really is unknown.

    A flood of unknown keys cannot turn into a flood of checks: one check is in flight at a time and at most one
    starts per CATCH_UP_INTERVAL_S per process; callers share them. Each caller waits for a check that started
    after it arrived (so it sees any key created before its request), at most about two intervals plus the check,
    and never longer than CATCH_UP_TIMEOUT_S. Checks and rebuilds run on their own thread, never on the event
    loop."""
    arrived = time.monotonic()
    deadline = arrived + CATCH_UP_TIMEOUT_S
    while _newer(seen) is None:
        check, when = _start_catch_up()  # when: the check's start time, or the seconds until one may start
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            if check is None:
                await asyncio.sleep(min(when, remaining))
                continue
            # Shielded: a caller that goes away must not cancel a check other callers share.
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(check)), remaining)
        except TimeoutError:
            return None
        if when >= arrived:
            break
    return _newer(seen)


def _newer(seen: Snapshot) -> Snapshot | None:
    snap = _holder.snapshot
    return snap if snap is not None and snap is not seen else None


def _run_refresher(stop: threading.Event) -> None:
    # The thread keeps its database connection between polls (opening one twice a second costs more CPU than the
    # poll itself, CPU the event loop then waits for); it is dropped after an error and on stop.
    try:
        while not stop.wait(settings.RAINYMODEL_SNAPSHOT_POLL_S):
            try:
                poll_once()
            except Exception:  # the refresher must outlive a database hiccup
                log.exception("config snapshot refresh failed; keeping the last one")
                close_old_connections()
    finally:
        connections.close_all()


def warn_unset_secrets(snap: Snapshot) -> None:
    """Log, once at startup, the enabled providers whose `api_key_env` names a variable this server lacks: their
    calls go out without credentials and fail with 401/403, which is easy to miss until every route has failed."""
    missing = [p.secret_unset_message for p in snap.providers.values() if p.enabled and p.secret_unset]
    if missing:
        log.warning(
            "enabled providers without their secret, whose calls go out unauthenticated: %s", "; ".join(missing)
        )


def ensure_loaded() -> Snapshot:
    """Build the first snapshot and start this process's refresher thread (idempotent). The first call in a
    process also warns about providers whose secret variable is not set."""
    snap = current()
    if not _holder.secrets_checked:
        _holder.secrets_checked = True
        warn_unset_secrets(snap)
    with _holder.lock:
        if _holder.thread is None or not _holder.thread.is_alive():
            _holder.stop = threading.Event()
            _holder.thread = threading.Thread(
                target=_run_refresher, args=(_holder.stop,), name="rainymodel-snapshot", daemon=True
            )
            _holder.thread.start()
    return snap


def stop_refresher() -> None:
    """Stop this process's refresher thread (lifespan shutdown); the last snapshot stays readable."""
    with _holder.lock:
        thread, _holder.thread = _holder.thread, None
        _holder.stop.set()
    if thread is not None:
        thread.join(5)


def _quota_info(quota: Quota | UserQuota) -> QuotaInfo:
    """A key's or a user's quota row as the request path reads it."""
    return QuotaInfo(
        period=quota.period,
        max_requests=quota.max_requests,
        max_tokens=quota.max_tokens,
        max_cost_usd=None if quota.max_cost_usd is None else float(quota.max_cost_usd),
    )
