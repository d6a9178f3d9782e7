"""Bearer tokens of the review API (authz.review.api): minted for a staff user, stored as their SHA-256 only.

Why our own and not DRF's authtoken or a DOT access token: authtoken keeps every key in clear in its table (a
database copy or a read-only SQL injection would hand out API access) and gives one key per user with no expiry; a
DOT access token is an OAuth token, which resource servers and introspection would also be shown. A review token is
256 random bits with a recognisable prefix, hashed at rest, with a name, an expiry, a revocation and a last use; the
value exists once, in the output of `manage.py create_review_token`.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from authz.models import ReviewToken

# Letters and digits only: config.logs redacts a Bearer credential made of these (and "-"), and an underscore would
# end the match early. 43 characters of 62 are 256 bits.
PREFIX = "csrv-"
_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 43
# How stale last_used_at may be: one UPDATE per token a minute at most, not one per call.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def review_token_create(
    *, user: Any, name: str = "", expires_in: timedelta | None, now: datetime | None = None
) -> tuple[ReviewToken, str]:
    """A new token for `user`; returns the row and the token, which is not stored and cannot be shown again."""
    now = now or timezone.now()
    raw = PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
    token = ReviewToken.objects.create(
        user=user,
        name=name,
        digest=digest(raw),
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    return token, raw


def review_token_find(raw: str, *, now: datetime | None = None) -> ReviewToken | None:
    """The live token `raw` is (not revoked, not expired), with its user; None for anything else."""
    if not raw.startswith(PREFIX) or len(raw) != len(PREFIX) + _LENGTH:
        return None  # not one of ours: no query
    now = now or timezone.now()
    token = (
        ReviewToken.objects.select_related("user")
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), digest=digest(raw), revoked_at__isnull=True)
        .first()
    )
    if token is not None and (token.last_used_at is None or token.last_used_at <= now - LAST_USED_GRANULARITY):
        ReviewToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def review_tokens_revoke(token_ids: list[int], *, now: datetime | None = None) -> int:
    """Revoke the given tokens (those not revoked yet); returns how many."""
    return ReviewToken.objects.filter(pk__in=token_ids, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
