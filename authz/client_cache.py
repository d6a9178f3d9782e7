"""What the pending-poll fast path knows about clients: a keyed digest of the credentials each client last proved
to the database, in Redis for CLIENT_TTL seconds.

The entry only ever lets a poll be answered "still pending" (authz.throttle); every other answer re-authenticates
against the database. Saving or deleting a client drops its entry (authz.apps), and the TTL bounds the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache

from django.conf import settings
from redis.exceptions import RedisError

from approvals import poll_mirror

from .client_auth import ClientCredentials

logger = logging.getLogger(__name__)

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
    """What to remember of credentials the database has just verified for a CIBA client (authz.throttle): the
    digest and the method, compared as one string with what a later poll presents. Secrets only: an assertion is
    verified on every poll (RFC 7523 §3: each jti once), so it is never remembered."""
    if credentials.is_assertion:
        raise ValueError("client_entry is for client secrets, not client assertions")
    return f"{client_mac(credentials)} {credentials.method}"


def forget_client(client_id: str) -> None:
    found = poll_mirror.redis()
    if found is None:
        return
    cache, client = found
    try:
        client.delete(cache.make_key(client_key(client_id)))
    except RedisError:
        logger.warning("Could not drop a client from the poll fast path's cache", exc_info=True)
