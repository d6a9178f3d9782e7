"""Counted attempts: the one lockout mechanism for everything a person or an agent may guess.

A guess (a user_code at bc-authorize, a password at sign-in or at the step-up, a prompt link) first takes a slot
in each of its counters with one atomic increment, and is evaluated only if every counter is still within its
limit. A correct guess gives its slots back; a wrong one keeps them until the window ends. So however many
requests race, at most `limit` wrong guesses are ever evaluated per window: reading the count, checking a slow hash
and then incrementing (the old shape) let every racer through while the first hash was still running.

Counters live in the cache: Redis in production (one Lua script: increment and start the window together, so no
counter can outlive its window), process memory for the single-process embedded server. While Redis is unreachable
a counter lets guesses through (logged); the slow hashes still make each guess expensive (docs/configuration.md).

Client addresses come from REMOTE_ADDR unless APPROVALS["CLIENT_IP_HEADER"] names a header a trusted reverse proxy
sets; a client's own X-Forwarded-For is never believed otherwise.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.http import HttpRequest
from redis.exceptions import RedisError

from approvals.conf import approvals_settings
from approvals.store import RedisStore, redis_store

logger = logging.getLogger(__name__)

# KEYS[1]: the counter; ARGV: delta, window seconds. A positive delta starts the window if the counter has none
# (a counter without a TTL would lock forever); a negative one never creates a counter.
_ADD_LUA = """
local delta = tonumber(ARGV[1])
if delta < 0 and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local value = redis.call('INCRBY', KEYS[1], delta)
if delta > 0 and redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return value
"""

# KEYS: counters, in order; ARGV[1]: window seconds, ARGV[1 + i]: the limit of KEYS[i]. Counts one in each counter
# until one goes over its limit, and returns that counter's position (0: none did); the later ones are not counted.
_COUNT_UNTIL_OVER_LUA = """
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local value = redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[1]) end
  if value > limit then return i end
end
return 0
"""

_scripts: dict[tuple[int, str], Any] = {}


def _script(store: RedisStore, source: str) -> Any:
    # register_script hashes the source once; the Script object then runs EVALSHA (EVAL after a Redis restart).
    script = _scripts.get((id(store), source))
    if script is None:
        script = _scripts[(id(store), source)] = store.client.register_script(source)
    return script


def _add_script(store: RedisStore) -> Any:
    return _script(store, _ADD_LUA)


class Verdict(enum.Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    # Refused without evaluating: a counter is at its limit.
    LOCKED = "locked"


@dataclass(frozen=True)
class Limit:
    """At most `max_failures` wrong guesses counted under `key` per `window_seconds`."""

    key: str
    max_failures: int
    window_seconds: int


def counter_add(key: str, *, timeout: int, delta: int = 1) -> int | None:
    """Add `delta` to a counter whose window of `timeout` seconds starts at its first count; the new value, or None
    while Redis is unreachable."""
    try:
        store = redis_store()
        if store is not None:
            return int(_add_script(store)(keys=[store.key(key)], args=[delta, max(int(timeout), 1)]))
        return _add_in_process(key, timeout=timeout, delta=delta)
    except RedisError:
        logger.warning("Counter unavailable (Redis): %s", key.rsplit(":", 1)[0], exc_info=True)
        return None


def count_until_over(limits: Sequence[tuple[str, int]], *, timeout: int) -> int:
    """Count one in each (key, limit) counter in turn, each window `timeout` seconds from its first count, until one
    goes over its limit: its position from 1, else 0. One round trip with Redis; while Redis is unreachable,
    nothing is over."""
    limits = [(key, limit) for key, limit in limits if limit]
    if not limits:
        return 0
    try:
        store = redis_store()
        if store is None:
            for position, (key, limit) in enumerate(limits, 1):
                if _add_in_process(key, timeout=timeout, delta=1) > limit:
                    return position
            return 0
        keys = [store.key(key) for key, _limit in limits]
        return int(
            _script(store, _COUNT_UNTIL_OVER_LUA)(keys=keys, args=[max(int(timeout), 1), *(n for _, n in limits)])
        )
    except RedisError:
        logger.warning("Counters unavailable (Redis): %s", limits[0][0].rsplit(":", 1)[0], exc_info=True)
        return 0


def _add_in_process(key: str, *, timeout: int, delta: int) -> int:
    # Any other Django cache: only the embedded server's process memory, whose add and incr each hold its lock.
    cache = caches["default"]
    for _attempt in range(3):
        if delta > 0 and cache.add(key, delta, timeout=timeout):
            return delta
        try:
            return cache.incr(key, delta)
        except ValueError:  # the window ended between add and incr: start a new one
            if delta < 0:
                return 0
    return delta


def counter_value(key: str) -> int:
    try:
        return int(caches["default"].get(key) or 0)
    except RedisError:
        return 0


def attempt(limits: Sequence[Limit], check: Callable[[], bool]) -> Verdict:
    """Evaluate one guess with `check` if every limit has a slot left, counting it first (see the module)."""
    taken: list[Limit] = []
    locked = False
    for limit in limits:
        value = counter_add(limit.key, timeout=limit.window_seconds)
        if value is None:
            continue  # unreachable: let it through, as documented
        taken.append(limit)
        if value > limit.max_failures:
            locked = True
            break
    if locked:
        _give_back(taken)
        return Verdict.LOCKED
    try:
        correct = check()
    except BaseException:
        _give_back(taken)
        raise
    if correct:
        _give_back(taken)
        return Verdict.CORRECT
    return Verdict.WRONG


def exhausted(limits: Sequence[Limit]) -> bool:
    """Whether a further guess would be refused (to word a message; never a substitute for `attempt`)."""
    return any(counter_value(limit.key) >= limit.max_failures for limit in limits)


def _give_back(limits: Sequence[Limit]) -> None:
    for limit in limits:
        counter_add(limit.key, timeout=limit.window_seconds, delta=-1)


def _digest(value: str) -> str:
    # Names in keys are digests: usernames may hold any character, and key names are not for reading.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# --- the limits every path shares -------------------------------------------------------------------------------------


def password_limits(*, username: str, address: str = "") -> list[Limit]:
    """A person's password guesses, at sign-in (any form: ours, the admin's) and at the step-up, share one count; a
    sign-in also counts against its client address. Usernames are casefolded, so "Alice" cannot dodge "alice"."""
    window = approvals_settings.PASSWORD_LOCKOUT_SECONDS
    limits = [
        Limit(
            f"approvals:attempts:password:{_digest(username.casefold())}",
            approvals_settings.PASSWORD_MAX_FAILURES,
            window,
        )
    ]
    if address:
        limits.append(
            Limit(
                f"approvals:attempts:sign-in-address:{_digest(_address_key(address))}",
                approvals_settings.SIGN_IN_MAX_FAILURES_PER_ADDRESS,
                window,
            )
        )
    return limits


def _address_key(address: str) -> str:
    """What one client's address counts as: an IPv6 address as its /64, which one subscriber is routed whole (2^64
    addresses to rotate through, each with a fresh count otherwise), an IPv4-mapped one as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def address_digest(address: str) -> str:
    """A client address as a counter key part: its /64 for IPv6 (see _address_key), digested."""
    return _digest(_address_key(address))


def user_code_limits(*, approver_id: Any) -> list[Limit]:
    return [
        Limit(
            f"approvals:attempts:user-code:{approver_id}",
            approvals_settings.USER_CODE_MAX_FAILURES,
            approvals_settings.USER_CODE_LOCKOUT_SECONDS,
        )
    ]


def link_limits(*, request_id: Any) -> list[Limit]:
    """Wrong tokens naming one request (its id is the token's first 22 characters) count against that request,
    never against an address: behind a proxy or a carrier's NAT an address is many people. Tokens naming no request
    only count towards the server-wide rate (link_flood_counted), so random ones leave no counters behind."""
    return [
        Limit(
            f"approvals:attempts:link:{request_id}",
            approvals_settings.LINK_MAX_FAILURES,
            approvals_settings.LINK_FAILURE_WINDOW_SECONDS,
        )
    ]


def link_flood_counted() -> bool:
    """Count one failed link server-wide; True while failures exceed APPROVALS["LINK_GLOBAL_MAX_FAILURES"] in the
    window. Only failures are refused then: a good link is never locked out by other people's bad ones."""
    limit = approvals_settings.LINK_GLOBAL_MAX_FAILURES
    value = counter_add("approvals:attempts:link-flood", timeout=approvals_settings.LINK_FAILURE_WINDOW_SECONDS)
    if value is not None and value == limit + 1:
        logger.warning(
            "More than %d failed prompt links in %d seconds", limit, approvals_settings.LINK_FAILURE_WINDOW_SECONDS
        )
    return value is not None and value > limit


# --- client addresses -------------------------------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The client's IP address: REMOTE_ADDR, or with APPROVALS["CLIENT_IP_HEADER"] set (for example
    X-Forwarded-For), the entry TRUSTED_PROXY_COUNT places from the right of that header, which the nearest
    trusted proxy wrote. A header that is absent, too short or not an address falls back to REMOTE_ADDR."""
    remote: str = request.META.get("REMOTE_ADDR", "")
    header = approvals_settings.CLIENT_IP_HEADER
    if not header:
        return remote
    entries = [entry.strip() for entry in request.headers.get(header, "").split(",") if entry.strip()]
    proxies = max(int(approvals_settings.TRUSTED_PROXY_COUNT), 1)
    if len(entries) < proxies:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-proxies]))
    except ValueError:
        return remote


# --- what an administrator sees and clears (approvals.lockouts) -------------------------------------------------------


@dataclass(frozen=True)
class CounterState:
    failures: int
    seconds_left: float | None  # None: no window running, or unknown (the embedded server's process memory)


def counter_states(keys: Sequence[str]) -> list[CounterState]:
    """Each counter's wrong guesses and how long its window still runs: one round trip with Redis. While Redis is
    unreachable this raises RedisError: an administrator must not be told "not locked" for want of an answer."""
    store = redis_store()
    if store is None:
        return [CounterState(failures=counter_value(key), seconds_left=None) for key in keys]
    pipe = store.client.pipeline(transaction=False)
    for key in keys:
        pipe.get(store.key(key))
        pipe.pttl(store.key(key))
    replies = pipe.execute()
    states = []
    for value, pttl in zip(replies[::2], replies[1::2], strict=True):
        failures = int(value or 0)
        states.append(CounterState(failures=failures, seconds_left=pttl / 1000 if failures and pttl > 0 else None))
    return states


def counters_clear(keys: Sequence[str]) -> None:
    """Delete the counters: their windows end now (RedisError while Redis is unreachable)."""
    store = redis_store()
    if store is None:
        caches["default"].delete_many(list(keys))
        return
    store.client.delete(*(store.key(key) for key in keys))
