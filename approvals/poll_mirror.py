"""A Redis mirror of whether each approval request is still pending, so agents' polls skip the database.

PostgreSQL stays the truth. The mirror can only ever let the token endpoint answer "still pending"; every other
answer is read from the database. Each transition overwrites the request's entry once it has committed, and the
poll path only fills an absent entry (SET NX), so a poll that read "pending" just before a decision cannot
overwrite that decision. Entries live at most MAX_TTL seconds: should a transition fail to reach Redis, agents see
the decision that much later, never wrongly.

Without Redis (the embedded server) there is no mirror and every poll reads the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

MAX_TTL = 60
SETTLED = "settled"


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
    ttl = int(min(MAX_TTL, (expires_at - now).total_seconds()))
    if ttl <= 0:
        return "", 0
    value = {"status": "pending", "client_id": client_id, "expires": expires_at.timestamp(), "interval": interval}
    return json.dumps(value), ttl


def mirror_pending(*, auth_req_id: str, client_id: str, expires_at: datetime, interval: int, now: datetime) -> None:
    """A new request is pending (called once it has committed)."""
    value, ttl = pending_entry(client_id=client_id, expires_at=expires_at, interval=interval, now=now)
    if ttl:
        _set(auth_req_id, value, ttl=ttl)


def mirror_settled(*, auth_req_id: str) -> None:
    """The request is no longer pending: polls must ask the database."""
    _set(auth_req_id, json.dumps({"status": SETTLED}), ttl=MAX_TTL)


def _set(auth_req_id: str, value: str, *, ttl: int) -> None:
    found = redis()
    if found is None:
        return
    cache, client = found
    key = cache.make_key(status_key(request_ref(auth_req_id)))
    try:
        client.set(key, value, ex=ttl)
    except RedisError:
        # A transition has committed; the entry it could not overwrite expires within MAX_TTL.
        logger.warning("Could not update the poll mirror for an approval request", exc_info=True)
