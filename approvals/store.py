"""The default cache's Redis server, reached through a redis-py client of our own, for the few places that need
more than Django's cache API: Lua scripts (approvals.attempts, the pending-poll fast path) and pipelined writes.

Built from the public CACHES setting (LOCATION, OPTIONS, KEY_PREFIX), so nothing here depends on the private
internals of Django's RedisCache. One client per process and cache location; redis-py's pool reconnects after a fork.
Without a Redis cache (the embedded server) there is none, and callers fall back to the cache API or the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed


@dataclass(frozen=True)
class RedisStore:
    client: redis.Redis
    cache: RedisCache

    def key(self, name: str) -> str:
        """The cache's full name for `name` (KEY_PREFIX and version), so the cache API and scripts share keys.
        make_key, not make_and_validate_key: our names are safe, and validation walks every character."""
        return self.cache.make_key(name)


_stores: dict[str, RedisStore | None] = {}


def redis_store(alias: str = "default") -> RedisStore | None:
    """The Redis behind cache `alias`, or None when that cache is not Redis."""
    if alias not in _stores:
        _stores[alias] = _build(alias)
    return _stores[alias]


def _build(alias: str) -> RedisStore | None:
    cache = caches[alias]
    if not isinstance(cache, RedisCache):
        return None
    config: dict[str, Any] = settings.CACHES[alias]
    location = config["LOCATION"]
    url = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
    options = {k: v for k, v in config.get("OPTIONS", {}).items() if k not in ("parser_class", "pool_class")}
    pool = redis.ConnectionPool.from_url(url, **options)
    return RedisStore(client=redis.Redis(connection_pool=pool), cache=cache)


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        _stores.clear()


setting_changed.connect(_reset)
