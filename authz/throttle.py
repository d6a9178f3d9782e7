"""Poll pacing for the CIBA token endpoint (CIBA Core §11 slow_down), kept in the cache (Redis in production) so
that a pending poll writes nothing to the database, and the pending poll's fast path, answered by Redis alone."""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.cache import caches
from redis.commands.core import Script
from redis.exceptions import RedisError

from approvals import poll_mirror
from approvals.poll_mirror import request_ref, status_key

from .client_auth import ClientCredentials
from .client_cache import CLIENT_TTL, client_entry, client_key, client_mac

logger = logging.getLogger(__name__)

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: the client adds 5 s per slow_down.

# One round trip, atomic. KEYS: gate, interval, client, status. ARGV: step, interval, lifetime, mac, method,
# client_id, now, client entry, its ttl, pending entry, its ttl.
# With a mac (the fast path), it first proves from the mirrors alone that the client presented the credentials it
# last proved to the database and that the request is still pending, else answers {-1, 0} (ask the database).
# On the database path it stores what the fast path needs next time: the client's entry, and the request's pending
# entry only if absent (approvals.poll_mirror). Then it paces: {1, interval} for a permitted poll, {0, new
# interval} for a poll that came too early.
_POLL_LUA = """
local interval, lifetime = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[8] ~= '' then redis.call('SET', KEYS[3], ARGV[8], 'EX', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('SET', KEYS[4], ARGV[10], 'NX', 'EX', ARGV[11]) end
if ARGV[4] ~= '' then
  local c = redis.call('GET', KEYS[3])
  if not c then return {-1, 0} end
  c = cjson.decode(c)
  if c.mac ~= ARGV[4] or c.method ~= ARGV[5] then return {-1, 0} end
  local r = redis.call('GET', KEYS[4])
  if not r then return {-1, 0} end
  r = cjson.decode(r)
  local now = tonumber(ARGV[7])
  if r.status ~= 'pending' or r.client_id ~= ARGV[6] or now >= r.expires then return {-1, 0} end
  interval, lifetime = r.interval, math.floor(r.expires - now)
end
interval = tonumber(redis.call('GET', KEYS[2]) or interval)
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', interval) then return {1, interval} end
interval = interval + tonumber(ARGV[1])
redis.call('SET', KEYS[2], interval, 'EX', math.max(lifetime, 1))
redis.call('SET', KEYS[1], 1, 'EX', interval)
return {0, interval}
"""
_poll_script: Script | None = None


def _gate_key(ref: str) -> str:
    return f"ciba:poll:{ref}"


def _interval_key(ref: str) -> str:
    return f"ciba:interval:{ref}"


def _run(keys: list[str], args: list[object]) -> tuple[int, int] | None:
    global _poll_script
    found = poll_mirror.redis()
    if found is None:
        return None
    cache, client = found
    if _poll_script is None:
        _poll_script = client.register_script(_POLL_LUA)  # EVALSHA, loading it again after a Redis restart
    # make_key, not make_and_validate_key: these names are ours and safe, and validation walks every character.
    result = _poll_script(keys=[cache.make_key(k) for k in keys], args=args, client=client)
    return int(result[0]), int(result[1])


def pending_poll_from_mirror(
    *, credentials: ClientCredentials, auth_req_id: str, now: datetime
) -> tuple[bool, int] | None:
    """(permitted, interval) for a poll Redis alone shows to be pending for this client; None: ask the database."""
    ref = request_ref(auth_req_id)
    keys = [_gate_key(ref), _interval_key(ref), client_key(credentials.client_id), status_key(ref)]
    args = [SLOW_DOWN_STEP, 0, 0, client_mac(credentials), credentials.method, credentials.client_id, now.timestamp()]
    args += ["", 0, "", 0]
    try:
        result = _run(keys, args)
    except RedisError:
        logger.warning("Redis is unavailable; answering the poll from the database", exc_info=True)
        return None
    if result is None or result[0] == -1:
        return None
    return bool(result[0]), result[1]


def poll_permitted(
    *,
    auth_req_id: str,
    interval: int,
    lifetime: int,
    credentials: ClientCredentials | None = None,
    pending_entry: tuple[str, int] = ("", 0),
) -> tuple[bool, int]:
    """Record a poll the database found pending. Returns (permitted, the interval now in force for it).

    The first poll is always permitted: the clock starts at a poll, not at the acknowledgement, so a client that
    polls straight away is not punished (Abblix/Oidc.Server#281). A poll that comes too early restarts the clock
    with the longer interval. With `credentials` (verified by the database) and `pending_entry`, the same round
    trip prepares the fast path for this client's next polls.
    """
    ref = request_ref(auth_req_id)
    gate_key, interval_key = _gate_key(ref), _interval_key(ref)
    keys = [gate_key, interval_key, client_key(credentials.client_id) if credentials else "-", status_key(ref)]
    client_value = client_entry(credentials) if credentials else ""
    args = [SLOW_DOWN_STEP, interval, max(lifetime, 1), "", "", "", 0, client_value, CLIENT_TTL, *pending_entry]
    try:
        result = _run(keys, args)
    except RedisError:
        # Pacing protects the server; losing it for a while must not stop agents from getting their answer.
        logger.warning("Redis is unavailable; poll not paced", exc_info=True)
        return True, interval
    if result is not None:
        return bool(result[0]), result[1]
    cache = caches["default"]
    current = cache.get(interval_key) or interval
    if cache.add(gate_key, 1, timeout=current):
        return True, current
    current += SLOW_DOWN_STEP
    cache.set(interval_key, current, timeout=max(lifetime, 1))
    cache.set(gate_key, 1, timeout=current)
    return False, current
