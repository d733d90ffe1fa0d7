"""The state every worker and machine must agree on: breaker state, rate-limit and quota counters, the config
version. Redis (through redis.asyncio, natively async) when `REDIS_URL` is set; an in-process store otherwise,
which is correct for exactly one process.

Why not Django's cache API: its async methods hop into a thread (`sync_to_async(thread_sensitive=True)`), which
serialises every cache call of the process behind one thread, and it has no atomic "increment and set expiry".
The request path must not block the event loop, so it uses the async methods here; admin pages, commands and
background threads use the `*_sync` twins.

Every method raises `SharedStateUnavailable` when the store cannot be reached; callers decide how to degrade, and
use one `Outage` each to leave an unreachable store alone for a while (the back-off lives only there).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref

from django.conf import settings

log = logging.getLogger(__name__)
PREFIX = "rm:"


class SharedStateUnavailable(Exception):
    """The shared store (Redis) could not be reached."""


class MemoryState:
    """In-process store for a single worker: a dict of key -> (value, expires_at), guarded by a lock. `clock` (a
    monotonic clock) is a seam for tests, so they can let a TTL run out without sleeping."""

    shared = False

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._data: dict[str, tuple[object, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key, now):
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._data[key]
            return None
        return item

    def get_sync(self, key):
        with self._lock:
            item = self._live(PREFIX + key, self._clock())
            return None if item is None else item[0]

    def get_many_sync(self, keys):
        now = self._clock()
        with self._lock:
            out = {}
            for key in keys:
                item = self._live(PREFIX + key, now)
                if item is not None:
                    out[key] = item[0]
            return out

    def set_sync(self, key, value, ttl=None):
        with self._lock:
            self._data[PREFIX + key] = (value, None if ttl is None else self._clock() + ttl)

    def add_sync(self, key, value, ttl=None):
        with self._lock:
            if self._live(PREFIX + key, self._clock()) is not None:
                return False
            self._data[PREFIX + key] = (value, None if ttl is None else self._clock() + ttl)
            return True

    def incr_sync(self, key, amount=1, ttl=None):
        """Add `amount` (int or float) and return the new value; a new key gets `ttl` seconds to live."""
        now = self._clock()
        with self._lock:
            item = self._live(PREFIX + key, now)
            if item is None:
                value, expires = 0, (None if ttl is None else now + ttl)
            else:
                value, expires = item
            value = value + amount
            self._data[PREFIX + key] = (value, expires)
            return value

    def compare_and_set_sync(self, expected, values):
        """Write `values` ({key: (value, ttl)}) only if every key of `expected` ({key: value or None for
        missing}) still holds that value; True when written."""
        now = self._clock()
        with self._lock:
            for key, value in expected.items():
                item = self._live(PREFIX + key, now)
                if (None if item is None else item[0]) != value:
                    return False
            for key, (value, ttl) in values.items():
                self._data[PREFIX + key] = (value, None if ttl is None else now + ttl)
            return True

    def ttl_sync(self, key):
        now = self._clock()
        with self._lock:
            item = self._live(PREFIX + key, now)
            if item is None or item[1] is None:
                return None
            return max(0.0, item[1] - now)

    def delete_sync(self, *keys):
        with self._lock:
            for key in keys:
                self._data.pop(PREFIX + key, None)

    def delete_prefix_sync(self, prefix):
        """Delete every key that starts with `prefix` (admin actions; never on the request path)."""
        with self._lock:
            for key in [k for k in self._data if k.startswith(PREFIX + prefix)]:
                del self._data[key]

    def ping_sync(self):
        return True

    def flush_sync(self):
        with self._lock:
            self._data.clear()

    async def get(self, key):
        return self.get_sync(key)

    async def get_many(self, keys):
        return self.get_many_sync(keys)

    async def set(self, key, value, ttl=None):
        self.set_sync(key, value, ttl)

    async def add(self, key, value, ttl=None):
        return self.add_sync(key, value, ttl)

    async def incr(self, key, amount=1, ttl=None):
        return self.incr_sync(key, amount, ttl)

    async def ttl(self, key):
        return self.ttl_sync(key)

    async def compare_and_set(self, expected, values):
        return self.compare_and_set_sync(expected, values)

    async def delete(self, *keys):
        self.delete_sync(*keys)


def _decode(value):
    """Redis returns bytes; numbers come back as numbers, everything else as str."""
    if value is None or isinstance(value, int | float):  # INCRBYFLOAT's reply is a float already: keep its fraction
        return value
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


class RedisState:
    """Redis-backed store shared by all workers. One async client per event loop (redis.asyncio connections are
    bound to the loop that made them) and one sync client for threads."""

    shared = True

    def __init__(self, url):
        import redis
        import redis.asyncio

        self._url = url
        self._errors = (redis.RedisError, OSError)
        self._sync = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._async_module = redis.asyncio

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # A blocking pool queues a burst (up to 2 s) instead of failing past max_connections.
            pool = self._async_module.BlockingConnectionPool.from_url(
                self._url,
                max_connections=256,
                timeout=2,
                socket_timeout=2,
                socket_connect_timeout=2,
                health_check_interval=30,
            )
            client = self._async_module.Redis(connection_pool=pool)
            self._async_clients[loop] = client
        return client

    def _wrap_sync(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as exc:
            raise SharedStateUnavailable(str(exc)) from exc

    async def _wrap(self, coro):
        try:
            return await coro
        except self._errors as exc:
            raise SharedStateUnavailable(str(exc)) from exc

    # sync
    def get_sync(self, key):
        return _decode(self._wrap_sync(self._sync.get, PREFIX + key))

    def get_many_sync(self, keys):
        keys = list(keys)
        if not keys:
            return {}
        values = self._wrap_sync(self._sync.mget, [PREFIX + k for k in keys])
        return {k: _decode(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_sync(self, key, value, ttl=None):
        self._wrap_sync(lambda: self._sync.set(PREFIX + key, value, px=_ms(ttl)))

    def add_sync(self, key, value, ttl=None):
        return bool(self._wrap_sync(lambda: self._sync.set(PREFIX + key, value, px=_ms(ttl), nx=True)))

    def incr_sync(self, key, amount=1, ttl=None):
        def run():
            pipe = self._sync.pipeline(transaction=True)
            _incr_pipeline(pipe, PREFIX + key, amount, ttl)
            return pipe.execute()[0]

        return _decode(self._wrap_sync(run))

    def ttl_sync(self, key):
        ms = self._wrap_sync(self._sync.pttl, PREFIX + key)
        return None if ms is None or ms < 0 else ms / 1000

    def delete_sync(self, *keys):
        if keys:
            self._wrap_sync(self._sync.delete, *[PREFIX + k for k in keys])

    def delete_prefix_sync(self, prefix):
        """Delete every key that starts with `prefix` (a SCAN: admin actions only, never on the request path)."""
        pattern = PREFIX + _glob_escape(prefix) + "*"
        keys = self._wrap_sync(lambda: list(self._sync.scan_iter(pattern, count=1000)))
        if keys:
            self._wrap_sync(self._sync.delete, *keys)

    def ping_sync(self):
        return bool(self._wrap_sync(self._sync.ping))

    def flush_sync(self):
        keys = self._wrap_sync(lambda: list(self._sync.scan_iter(PREFIX + "*")))
        if keys:
            self._wrap_sync(self._sync.delete, *keys)

    # async
    async def get(self, key):
        return _decode(await self._wrap(self._client().get(PREFIX + key)))

    async def get_many(self, keys):
        keys = list(keys)
        if not keys:
            return {}
        values = await self._wrap(self._client().mget([PREFIX + k for k in keys]))
        return {k: _decode(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def set(self, key, value, ttl=None):
        await self._wrap(self._client().set(PREFIX + key, value, px=_ms(ttl)))

    async def add(self, key, value, ttl=None):
        return bool(await self._wrap(self._client().set(PREFIX + key, value, px=_ms(ttl), nx=True)))

    async def incr(self, key, amount=1, ttl=None):
        pipe = self._client().pipeline(transaction=True)
        _incr_pipeline(pipe, PREFIX + key, amount, ttl)
        return _decode((await self._wrap(pipe.execute()))[0])

    async def ttl(self, key):
        ms = await self._wrap(self._client().pttl(PREFIX + key))
        return None if ms is None or ms < 0 else ms / 1000

    async def compare_and_set(self, expected, values):
        """Write `values` ({key: (value, ttl)}) only if every key of `expected` ({key: value or None for
        missing}) still holds that value, in one Lua script (atomic in Redis); True when written."""
        keys, args = _cas_arguments(expected, values)
        script = self._client().register_script(_CAS_SCRIPT)  # EVALSHA, loading the script when Redis lacks it
        return bool(await self._wrap(script(keys=keys, args=args)))

    async def delete(self, *keys):
        if keys:
            await self._wrap(self._client().delete(*[PREFIX + k for k in keys]))


# KEYS: the expected keys, then the written keys. ARGV: the number of expected keys; per expected key "0" (must be
# missing) or "1" and the value; per written key the value and its ttl in ms (0: none).
_CAS_SCRIPT = """
local n = tonumber(ARGV[1])
local a = 2
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  if ARGV[a] == '0' then
    if current then return 0 end
    a = a + 1
  else
    if current ~= ARGV[a + 1] then return 0 end
    a = a + 2
  end
end
for i = n + 1, #KEYS do
  local ttl = tonumber(ARGV[a + 1])
  if ttl > 0 then redis.call('SET', KEYS[i], ARGV[a], 'PX', ttl) else redis.call('SET', KEYS[i], ARGV[a]) end
  a = a + 2
end
return 1
"""


def _cas_arguments(expected, values):
    keys = [PREFIX + k for k in expected] + [PREFIX + k for k in values]
    args: list[int | str] = [len(expected)]
    for value in expected.values():
        args += ["0"] if value is None else ["1", str(value)]
    for value, ttl in values.values():
        args += [value, _ms(ttl) or 0]
    return keys, args


def _glob_escape(text):
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms(ttl):
    return None if ttl is None else max(1, int(ttl * 1000))


def _incr_pipeline(pipe, key, amount, ttl):
    if isinstance(amount, float):
        pipe.incrbyfloat(key, amount)
    else:
        pipe.incrby(key, amount)
    if ttl is not None:
        pipe.pexpire(key, _ms(ttl), nx=True)  # only a new key gets the expiry; later increments keep it


class Outage:
    """ "The shared store failed: leave it alone for a while." One per caller that degrades on its own (breakers,
    limits, admin pages), so a black-holed Redis (no refusal, just a socket timeout) costs each of them one
    timeout per `retry_s`, not one per call. `failed()` starts or extends the pause; `recovered()` ends it.

    `failed()` and `recovered()` say whether the state changed, and `should_warn()` rate-limits the error log, so
    each caller logs in its own words without flooding the log. `clock` is a seam for tests (injected time)."""

    def __init__(self, retry_s: float, *, warn_every_s: float = 10.0, clock=time.monotonic):
        self.retry_s = retry_s
        self.warn_every_s = warn_every_s
        self.clock = clock
        self.down = False
        self.retry_at = 0.0
        self._warned: dict[str, float] = {}

    def skip(self) -> bool:
        """True while the store should be left alone (a failure less than `retry_s` ago)."""
        return self.down and self.clock() < self.retry_at

    def failed(self) -> bool:
        """Note a failure (the pause starts again); True when the store was thought reachable until now."""
        was_down = self.down
        self.down = True
        self.retry_at = self.clock() + self.retry_s
        return not was_down

    def recovered(self) -> bool:
        """Note a success; True when the store had been failing until now."""
        was_down = self.down
        self.down = False
        return was_down

    def should_warn(self, what: str) -> bool:
        """True at most once per `warn_every_s` for each `what`: whether to log this failure."""
        now = self.clock()
        if now - self._warned.get(what, -1e18) < self.warn_every_s:
            return False
        self._warned[what] = now
        return True


_state = None
_state_lock = threading.Lock()


def state():
    """The process's shared store, chosen once from settings.REDIS_URL."""
    global _state
    if _state is None:
        with _state_lock:
            if _state is None:
                _state = RedisState(settings.REDIS_URL) if settings.REDIS_URL else MemoryState()
    return _state
