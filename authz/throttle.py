"""Poll pacing for the CIBA token endpoint (CIBA Core §11 slow_down), kept in the cache (Redis in production) so
that a pending poll writes nothing to the database."""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.commands.core import Script

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: the client adds 5 s per slow_down.

# One round trip and atomic: two agents' pollers racing on one request cannot both pass the gate.
# KEYS: gate, interval. ARGV: default interval, step, request lifetime. Returns {permitted, interval}.
_PACE_LUA = """
local interval = tonumber(redis.call('GET', KEYS[2]) or ARGV[1])
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', interval) then
  return {1, interval}
end
interval = interval + tonumber(ARGV[2])
redis.call('SET', KEYS[2], interval, 'EX', math.max(tonumber(ARGV[3]), 1))
redis.call('SET', KEYS[1], 1, 'EX', interval)
return {0, interval}
"""


def poll_permitted(*, approval_request_id: str, interval: int, lifetime: int) -> tuple[bool, int]:
    """Record a poll. Returns (permitted, the interval now in force for this request).

    The first poll is always permitted: the clock starts at a poll, not at the acknowledgement, so a client that
    polls straight away is not punished (Abblix/Oidc.Server#281). A poll that comes too early restarts the clock
    with the longer interval.
    """
    gate_key = f"ciba:poll:{approval_request_id}"
    interval_key = f"ciba:interval:{approval_request_id}"
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        return _poll_permitted_redis(cache, gate_key, interval_key, interval, lifetime)
    current = cache.get(interval_key) or interval
    if cache.add(gate_key, 1, timeout=current):
        return True, current
    current += SLOW_DOWN_STEP
    cache.set(interval_key, current, timeout=max(lifetime, 1))
    cache.set(gate_key, 1, timeout=current)
    return False, current


_pace_script: Script | None = None


def _poll_permitted_redis(
    cache: RedisCache, gate_key: str, interval_key: str, interval: int, lifetime: int
) -> tuple[bool, int]:
    global _pace_script
    keys = [cache.make_and_validate_key(gate_key), cache.make_and_validate_key(interval_key)]
    # Django builds a new redis.Redis (and its table of response callbacks) for every call; on this path that
    # costs more than the round trip. One client per cache backend, on the backend's connection pool.
    client = getattr(cache, "_countersign_client", None)
    if client is None:
        client = cache._countersign_client = cache._cache.get_client(keys[0], write=True)
    if _pace_script is None:
        _pace_script = client.register_script(_PACE_LUA)  # EVALSHA, loading the script again after a restart
    permitted, current = _pace_script(keys=keys, args=[interval, SLOW_DOWN_STEP, lifetime], client=client)
    return bool(permitted), int(current)
