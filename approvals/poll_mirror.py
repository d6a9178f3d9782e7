"""A Redis mirror of whether each approval request is still pending, so agents' polls skip the database.

PostgreSQL stays the truth. The mirror can only ever let the token endpoint answer "still pending"; every other
answer is read from the database. Each transition overwrites the request's entry once it has committed, and the
poll path only fills an absent entry (SET NX), so a poll that read "pending" just before a decision cannot
overwrite that decision. An entry lives until its request expires. Should a transition fail to reach Redis, the
sweeper (`resettle`, run by Celery beat) writes it again: agents see the decision that much later, never wrongly.

Without Redis (the embedded server) there is no mirror and every poll reads the database.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Entries are plain strings, not JSON: the Lua script in authz.throttle reads them on every poll, and string.match
# costs less there than cjson. A pending entry is "pending <expires> <interval> <client_id>" (the client_id last,
# so that it may hold any character); anything else means "ask the database".
_SETTLED_VALUE = "settled"


def request_ref(auth_req_id: str) -> str:
    """The name of a request in Redis keys: a digest, so auth_req_ids (the agents' secrets) are not key names."""
    return hashlib.sha256(auth_req_id.encode()).hexdigest()[:40]


def status_key(ref: str) -> str:
    return f"ciba:status:{ref}"


def redis() -> tuple[RedisCache, Any] | None:
    """The default cache and one reusable Redis client on its pool, or None if the cache is not Redis.

    Django's RedisCache builds a new redis.Redis, with its table of response callbacks, on every call; on the
    poll path that costs more than the round trip.
    """
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return None
    client = getattr(cache, "_countersign_client", None)
    if client is None:
        client = cache._countersign_client = cache._cache.get_client(write=True)
    return cache, client


def pending_entry(*, client_id: str, expires_at: datetime, interval: int, now: datetime) -> tuple[str, int]:
    """The value and lifetime of a pending request's entry; ("", 0) when too close to expiry to be worth it."""
    ttl = int((expires_at - now).total_seconds())
    if ttl <= 0:
        return "", 0
    return f"pending {expires_at.timestamp()!r} {int(interval)} {client_id}", ttl


def mirror_pending(*, auth_req_id: str, client_id: str, expires_at: datetime, interval: int, now: datetime) -> None:
    """A new request is pending (called once it has committed)."""
    value, ttl = pending_entry(client_id=client_id, expires_at=expires_at, interval=interval, now=now)
    if ttl:
        _set(auth_req_id, value, ttl=ttl)


def mirror_settled(*, auth_req_id: str, expires_at: datetime, now: datetime) -> None:
    """The request is no longer pending: polls must ask the database.

    The entry outlives the request's expiry by a second, so it outlives any pending entry a poll could still add.
    """
    _set(auth_req_id, _SETTLED_VALUE, ttl=_settled_ttl(expires_at, now))


def _settled_ttl(expires_at: datetime, now: datetime) -> int:
    return max(int((expires_at - now).total_seconds()) + 1, 1)


def resettle(*, decided: Iterable[tuple[str, datetime]], now: datetime, chunk_size: int = 1000) -> int:
    """Write "settled" again for (auth_req_id, expires_at) of decided requests that have not expired.

    Only a transition that could not reach Redis needs this; rewriting the others is harmless and cheap (one
    pipelined round trip per chunk). Returns how many entries were written.
    """
    found = redis()
    if found is None:
        return 0
    cache, client = found
    written = 0
    rows = iter(decided)
    while chunk := list(islice(rows, chunk_size)):
        pipe = client.pipeline(transaction=False)
        for auth_req_id, expires_at in chunk:
            key = cache.make_key(status_key(request_ref(auth_req_id)))
            pipe.set(key, _SETTLED_VALUE, ex=_settled_ttl(expires_at, now))
        pipe.execute()
        written += len(chunk)
    return written


def _set(auth_req_id: str, value: str, *, ttl: int) -> None:
    found = redis()
    if found is None:
        return
    cache, client = found
    key = cache.make_key(status_key(request_ref(auth_req_id)))
    try:
        client.set(key, value, ex=ttl)
    except RedisError:
        # The transition still commits; the sweeper (resettle) writes the entry once Redis answers again.
        logger.warning("Could not update the poll mirror for an approval request", exc_info=True)
