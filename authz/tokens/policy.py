"""Whether an access token issued here still stands: one answer for introspection, bearer validation (userinfo and
every resource DOT protects), token exchange (subject and actor tokens) and refresh.

A token stands while it is unexpired, is not a registration token, its user (if any) is active, its client may still
use the grant that issued it (authz.models.client_allows_grant), and, for an exchanged token, every token up its chain
still stands (RFC 8693: an exchanged token is only as good as the token it came from). An administrator's decision
therefore takes effect on tokens already issued, not only on the next grant.
"""

from __future__ import annotations

from typing import Any

from oauth2_provider.models import get_access_token_model

from authz.clients.registration import is_registration_token
from authz.constants import (
    AUTHORIZATION_CODE_GRANT_TYPE,
    CIBA_GRANT_TYPE,
    CLIENT_CREDENTIALS_GRANT_TYPE,
    TOKEN_EXCHANGE_GRANT_TYPE,
)
from authz.models import TokenDetails, ciba_client_of, client_allows_grant

# A chain longer than this is refused: each hop nests one more `act` object in every token below it.
MAX_CHAIN_DEPTH = 8


def token_active(token: Any) -> bool:
    """Whether `token` (an AccessToken row) and every token it was exchanged from still stand."""
    current = token
    for _hop in range(MAX_CHAIN_DEPTH + 1):
        details = details_of(current)
        if not _stands(current, details):
            return False
        if details is None or details.act is None:
            return True  # not exchanged: the root of its chain
        if details.subject_token_id is None:
            # Revocation removes exchanged tokens with their subject (authz.tokens.exchange.token_family_lock); a
            # subject that disappeared any other way (a rotated refresh token, an admin deleting a row) leaves this
            # link NULL.
            return False
        current = (
            get_access_token_model()
            .objects.select_related("user", "application__ciba")
            .filter(pk=details.subject_token_id)
            .first()
        )
        if current is None:
            return False
    return False


def user_active(user: Any) -> bool:
    """A token without a user is the client's own (client credentials); a person's tokens need the person active."""
    return user is None or bool(user.is_active)


def details_of(token: Any) -> TokenDetails | None:
    try:
        details: TokenDetails = token.token_details
    except TokenDetails.DoesNotExist:
        return None
    return details


def _stands(token: Any, details: TokenDetails | None) -> bool:
    if token.is_expired() or is_registration_token(token) or not user_active(token.user):
        return False
    return client_allows_grant(token.application, _issuing_grant(token, details))


def _issuing_grant(token: Any, details: TokenDetails | None) -> str:
    """The grant a token came from, as far as the client's permission is concerned: a person's token that was not
    exchanged came from their CIBA approval (refreshing it kept that origin), a token without a person from client
    credentials. DOT's own clients without CIBA settings get DOT's authorization code."""
    if details is not None and details.act is not None:
        return TOKEN_EXCHANGE_GRANT_TYPE
    if token.user_id is None:
        return CLIENT_CREDENTIALS_GRANT_TYPE
    if ciba_client_of(token.application) is not None:
        return CIBA_GRANT_TYPE
    return AUTHORIZATION_CODE_GRANT_TYPE
