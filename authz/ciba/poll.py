"""The pending-poll fast path of the CIBA token endpoint (CIBA Core 7.3, 11): the one place that knows its Redis
key format, its Lua script and what it remembers of clients.

An agent polls every few seconds for minutes, so a pending poll must not touch PostgreSQL. Three things in Redis
make that possible:
- the request mirror: whether each request is still pending (`mirror_pending`, `mirror_settled`, fed by
  approvals' `approval_request_changed` signal). PostgreSQL stays the truth: the mirror can only ever let the
  token endpoint answer "still pending"; every other answer is read from the database. Each transition overwrites
  the request's entry, and the poll path only fills an absent entry (SET NX), so a poll that read "pending" just
  before a decision cannot overwrite that decision. Should a transition fail to reach Redis, `resettle` (Celery
  beat) writes it again: agents see the decision that much later, never wrongly.
- the client cache: a keyed digest of the credentials each client last proved to the database (`client_entry`),
  for CLIENT_TTL seconds; saving or deleting a client drops it (authz.apps), and so does suspending it
  (authz.review.actions). Secrets only: an assertion is
  verified on every poll (RFC 7523 section 3: each jti once).
- pacing (CIBA Core 11 slow_down): a gate per request that lasts the interval, and the interval itself.
One Lua script (`_POLL_LUA`) does a whole poll in one round trip. Without Redis (the embedded server) there is no
mirror and no client cache, every poll reads the database (`load_poll_record`), and pacing uses the cache API.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from itertools import islice
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from oauth2_provider.models import get_application_model
from redis.exceptions import NoScriptError, RedisError

from approvals import selectors
from approvals.models import ApprovalRequest
from approvals.store import RedisStore, redis_store
from authz.clients.auth import ClientCredentials
from authz.models import CibaClient

if TYPE_CHECKING:
    from django.db.models.options import Options

logger = logging.getLogger(__name__)


# --- the request mirror -----------------------------------------------------------------------------------------------

# Entries are plain strings, not JSON: the Lua script in authz.ciba.poll reads them on every poll, and string.match
# costs less there than cjson. A pending entry is "pending <expires> <interval> <client_id>" (the client_id last,
# so that it may hold any character); anything else means "ask the database".
_SETTLED_VALUE = "settled"


def request_ref(auth_req_id: str) -> str:
    """The name of a request in Redis keys: a digest, so auth_req_ids (the agents' secrets) are not key names."""
    return hashlib.sha256(auth_req_id.encode()).hexdigest()[:40]


def status_key(ref: str) -> str:
    return f"ciba:status:{ref}"


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
    store = redis_store()
    if store is None:
        return 0
    written = 0
    rows = iter(decided)
    while chunk := list(islice(rows, chunk_size)):
        pipe = store.client.pipeline(transaction=False)
        for auth_req_id, expires_at in chunk:
            key = store.key(status_key(request_ref(auth_req_id)))
            pipe.set(key, _SETTLED_VALUE, ex=_settled_ttl(expires_at, now))
        pipe.execute()
        written += len(chunk)
    return written


def _set(auth_req_id: str, value: str, *, ttl: int) -> None:
    store = redis_store()
    if store is None:
        return
    try:
        store.client.set(store.key(status_key(request_ref(auth_req_id))), value, ex=ttl)
    except RedisError:
        # The transition still commits; the sweeper (resettle) writes the entry once Redis answers again.
        logger.warning("Could not update the poll mirror for an approval request", exc_info=True)


# --- the client cache -------------------------------------------------------------------------------------------------

CLIENT_TTL = 300


def client_key(client_id: str) -> str:
    return f"ciba:client:{hashlib.sha256(client_id.encode()).hexdigest()[:40]}"


@lru_cache(maxsize=4)
def _mac_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"countersign.client-cache" + secret_key.encode()).digest()


def client_mac(credentials: ClientCredentials) -> str:
    # Keyed with SECRET_KEY: Redis never holds anything from which a secret could be checked offline.
    message = f"{credentials.client_id}\0{credentials.secret}".encode()
    return hmac.new(_mac_key(settings.SECRET_KEY), message, hashlib.sha256).hexdigest()


def client_entry(credentials: ClientCredentials) -> str:
    """What to remember of credentials the database has just verified for a CIBA client (authz.ciba.poll): the
    digest and the method, compared as one string with what a later poll presents. Secrets only: an assertion is
    verified on every poll (RFC 7523 §3: each jti once), so it is never remembered."""
    if credentials.is_assertion:
        raise ValueError("client_entry is for client secrets, not client assertions")
    return f"{client_mac(credentials)} {credentials.method}"


def forget_saved_client(sender: type, instance: Any, **kwargs: Any) -> None:
    """post_save/post_delete receiver for an Application or its CibaClient (connected in authz.apps)."""
    forget_client(getattr(instance, "application", instance).client_id)


def forget_client(client_id: str) -> None:
    store = redis_store()
    if store is None:
        return
    try:
        store.client.delete(store.key(client_key(client_id)))
    except RedisError:
        logger.warning("Could not drop a client from the poll fast path's cache", exc_info=True)


# --- pacing and the one-round-trip poll -------------------------------------------------------------------------------

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: the client adds 5 s per slow_down.

# One round trip, atomic. KEYS: gate, interval, client, status. ARGV: step, interval, lifetime, presented client
# entry, client_id, now, client entry to store, its ttl, pending entry to store, its ttl.
# With a presented client entry (the fast path), it first proves from the mirrors alone that the client presented
# the credentials it last proved to the database and that the request is still pending for that client, else
# answers {-1, 0} (ask the database). On the database path it stores what the fast path needs next time: the
# client's entry, and the request's pending entry only if absent (authz.ciba.poll). Then it paces: {1,
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
    store = redis_store()
    if store is None:
        return None
    keys = [store.key(k) for k in keys]
    # One command on this thread's own connection, without redis-py's per-command machinery (retry wrapper,
    # observability hooks, response callbacks, the pool's bookkeeping): on the poll path that machinery cost the
    # web worker more CPU than Redis spends running the script.
    connection = _connection(store)
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


def _connection(store: RedisStore) -> Any:
    """A connection of this thread and process, made with the pool's own settings (timeouts included)."""
    pool = store.client.connection_pool
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


# --- the database read ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollRecord:
    client_type: str | None  # None: no client with that client_id
    client_secret: str
    ciba_enabled: bool
    registered_method: str | None  # None: the client has no CIBA settings
    suspended: bool  # an administrator suspended the client (issue 18)
    request_id: UUID | None  # None: no such auth_req_id for this client
    status: str
    expires_at: datetime | None
    interval: int


@cache
def _sql() -> str:
    app, ciba, req = get_application_model()._meta, CibaClient._meta, ApprovalRequest._meta

    def col(meta: Options[Any], name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, Field) and field.column is not None  # a concrete field: it has a column
        return connection.ops.quote_name(field.column)

    q = connection.ops.quote_name
    # Only quoted identifiers from the models' metadata are interpolated; values are query parameters.
    return (
        f"SELECT a.{col(app, 'client_type')}, a.{col(app, 'client_secret')}, c.{col(ciba, 'ciba_enabled')}, "  # noqa: S608
        f"c.{col(ciba, 'token_endpoint_auth_method')}, c.{col(ciba, 'suspended_at')}, "
        f"c.{col(ciba, 'deregistered_at')}, r.{col(req, 'id')}, "
        f"r.{col(req, 'status')}, "
        f"r.{col(req, 'expires_at')}, r.{col(req, 'interval')} "
        f"FROM {q(app.db_table)} a "
        f"LEFT JOIN {q(ciba.db_table)} c ON c.{col(ciba, 'application')} = a.{col(app, 'id')} "
        f"LEFT JOIN {q(req.db_table)} r ON r.{col(req, 'client')} = a.{col(app, 'id')} "
        f"AND r.{col(req, 'auth_req_id')} = %s "
        f"WHERE a.{col(app, 'client_id')} = %s"
    )


def load_poll_record(*, client_id: str, auth_req_id: str) -> PollRecord:
    with connection.cursor() as cursor:
        cursor.execute(_sql(), [auth_req_id, client_id])
        row = cursor.fetchone()
    if row is None or row[5] is not None:
        # No such client, or one that deleted its registration (RFC 7592 §2.3: its client_id is invalidated).
        return PollRecord(None, "", False, None, False, None, "", None, 0)
    client_type, secret, ciba_enabled, method, suspended_at, _gone, request_id, status, expires_at, interval = row
    if isinstance(expires_at, str):  # SQLite hands back text
        expires_at = parse_datetime(expires_at)
    if expires_at is not None and timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, UTC)
    if request_id is not None and not isinstance(request_id, UUID):
        request_id = UUID(str(request_id))  # SQLite stores UUIDs as text
    return PollRecord(
        client_type=client_type,
        client_secret=secret,
        ciba_enabled=bool(ciba_enabled),
        registered_method=method,
        suspended=suspended_at is not None,
        request_id=request_id,
        status=status or "",
        expires_at=expires_at,
        interval=interval or 0,
    )


# --- fed by approvals -----------------------------------------------------------------------------------------------


def on_approval_request_changed(
    *,
    approval_request_id: UUID | str,
    status: str,
    previous: str | None,
    at: datetime,
    approval_request: ApprovalRequest | None = None,
    **kwargs: Any,
) -> None:
    """approval_request_changed receiver: a new request is mirrored as pending once it has committed; a decision
    settles its entry before the commit, not after: "settled" only sends polls to the database, so it is right even
    if the transaction rolls back, and a poll that read "pending" meanwhile cannot overwrite it (SET NX). Expiry
    needs nothing: a pending entry carries its own end."""
    if previous is None and approval_request is not None:
        entry = (approval_request.auth_req_id, approval_request.client.client_id)
        expires_at, interval = approval_request.expires_at, approval_request.interval
        transaction.on_commit(
            lambda: mirror_pending(
                auth_req_id=entry[0], client_id=entry[1], expires_at=expires_at, interval=interval, now=at
            )
        )
    elif previous == ApprovalRequest.Status.PENDING and status != ApprovalRequest.Status.EXPIRED:
        auth_req_id, expires_at = selectors.approval_request_poll_key(approval_request_id=approval_request_id)
        mirror_settled(auth_req_id=auth_req_id, expires_at=expires_at, now=at)


def resettle_decided(*, now: datetime | None = None) -> int:
    """Mark every decided, unexpired request settled in the mirror again (run by Celery beat): a decision whose
    write to Redis failed would otherwise leave its agent reading "pending" until the request expires."""
    now = now or timezone.now()
    try:
        return resettle(decided=selectors.approval_requests_decided_unexpired(now=now), now=now)
    except RedisError:
        logger.warning("Redis is unavailable; the poll mirror will be re-settled on the next run", exc_info=True)
        return 0
