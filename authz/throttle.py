"""Poll pacing for the CIBA token endpoint (CIBA Core §11 slow_down), kept in the cache (Redis in production) so
that a pending poll writes nothing to the database, and the pending poll's fast path, answered by Redis alone."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import datetime
from typing import Any

from django.core.cache import caches
from redis.exceptions import NoScriptError, RedisError

from approvals import poll_mirror
from approvals.poll_mirror import request_ref, status_key

from .client_auth import ClientCredentials
from .client_cache import CLIENT_TTL, client_entry, client_key

logger = logging.getLogger(__name__)

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: the client adds 5 s per slow_down.

# One round trip, atomic. KEYS: gate, interval, client, status. ARGV: step, interval, lifetime, presented client
# entry, client_id, now, client entry to store, its ttl, pending entry to store, its ttl.
# With a presented client entry (the fast path), it first proves from the mirrors alone that the client presented
# the credentials it last proved to the database and that the request is still pending for that client, else
# answers {-1, 0} (ask the database). On the database path it stores what the fast path needs next time: the
# client's entry, and the request's pending entry only if absent (approvals.poll_mirror). Then it paces: {1,
# interval} for a permitted poll, {0, wait} for a poll that came too early, where the interval grows by the step
# (CIBA Core 11) and wait is that interval, but never more than the seconds the request has left.
_POLL_LUA = """
local interval, lifetime = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[7] ~= '' then redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('SET', KEYS[4], ARGV[9], 'NX', 'EX', ARGV[10]) end
if ARGV[4] ~= '' then
  if redis.call('GET', KEYS[3]) ~= ARGV[4] then return {-1, 0} end
  local entry = redis.call('GET', KEYS[4])
  if not entry then return {-1, 0} end
  local expires, every, client_id = string.match(entry, '^pending (%S+) (%d+) (.*)$')
  local now = tonumber(ARGV[6])
  if client_id ~= ARGV[5] or now >= tonumber(expires) then return {-1, 0} end
  interval, lifetime = tonumber(every), math.floor(tonumber(expires) - now)
end
interval = tonumber(redis.call('GET', KEYS[2]) or interval)
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', interval) then return {1, interval} end
interval = interval + tonumber(ARGV[1])
redis.call('SET', KEYS[2], interval, 'EX', math.max(lifetime, 1))
redis.call('SET', KEYS[1], 1, 'EX', interval)
return {0, math.min(interval, math.max(lifetime, 1))}
"""
_POLL_SHA = hashlib.sha1(_POLL_LUA.encode(), usedforsecurity=False).hexdigest()  # the name Redis gives a script


def _gate_key(ref: str) -> str:
    return f"ciba:poll:{ref}"


def _interval_key(ref: str) -> str:
    return f"ciba:interval:{ref}"


def _run(keys: list[str], args: list[object]) -> tuple[int, int] | None:
    found = poll_mirror.redis()
    if found is None:
        return None
    cache, client = found
    # make_key, not make_and_validate_key: these names are ours and safe, and validation walks every character.
    keys = [cache.make_key(k) for k in keys]
    # One command on this thread's own connection, without redis-py's per-command machinery (retry wrapper,
    # observability hooks, response callbacks, the pool's bookkeeping): on the poll path that machinery cost the
    # web worker more CPU than Redis spends running the script.
    connection = _connection(client)
    try:
        try:
            connection.send_command("EVALSHA", _POLL_SHA, len(keys), *keys, *args)
            result = connection.read_response()
        except NoScriptError:  # Redis restarted or flushed its scripts: EVAL loads it again.
            connection.send_command("EVAL", _POLL_LUA, len(keys), *keys, *args)
            result = connection.read_response()
    except BaseException:
        connection.disconnect()  # a half-read reply must not reach the next command; it reconnects
        raise
    return int(result[0]), int(result[1])


_local = threading.local()


def _connection(client: Any) -> Any:
    """A connection of this thread and process, made with the cache's settings (timeouts included)."""
    pool = client.connection_pool
    connection = getattr(_local, "connection", None)
    if connection is None or _local.pool is not pool or connection.pid != os.getpid():
        connection = pool.connection_class(**pool.connection_kwargs)
        _local.connection, _local.pool = connection, pool
    return connection


def pending_poll_from_mirror(
    *, credentials: ClientCredentials, auth_req_id: str, now: datetime
) -> tuple[bool, int] | None:
    """(permitted, wait) for a poll Redis alone shows to be pending for this client; None: ask the database.

    Only for secrets: a client_assertion must have its signature verified and its jti consumed on every poll."""
    if credentials.is_assertion:
        return None
    ref = request_ref(auth_req_id)
    keys = [_gate_key(ref), _interval_key(ref), client_key(credentials.client_id), status_key(ref)]
    presented = client_entry(credentials)
    args = [SLOW_DOWN_STEP, 0, 0, presented, credentials.client_id, repr(now.timestamp()), "", 0, "", 0]
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
    """Record a poll the database found pending. Returns (permitted, the interval now in force for it), where the
    interval of a refused poll is capped at `lifetime`, the seconds the request has left: after a burst of early
    polls the interval may have grown past the request's end, and no answer asks a client to wait beyond that.

    The first poll is always permitted: the clock starts at a poll, not at the acknowledgement, so a client that
    polls straight away is not punished (Abblix/Oidc.Server#281). A poll that comes too early restarts the clock
    with the longer interval. With `credentials` (verified by the database) and `pending_entry`, the same round
    trip prepares the fast path for this client's next polls.
    """
    ref = request_ref(auth_req_id)
    gate_key, interval_key = _gate_key(ref), _interval_key(ref)
    keys = [gate_key, interval_key, client_key(credentials.client_id) if credentials else "-", status_key(ref)]
    # No entry for an assertion: the fast path must never answer for one (see pending_poll_from_mirror).
    remembered = credentials if credentials is not None and not credentials.is_assertion else None
    client_value = client_entry(remembered) if remembered else ""
    args = [SLOW_DOWN_STEP, interval, max(lifetime, 1), "", "", 0, client_value, CLIENT_TTL, *pending_entry]
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
    return False, min(current, max(lifetime, 1))
