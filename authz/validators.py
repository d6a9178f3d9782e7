from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model, refresh_token_expire_timedelta
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from approvals import services as approval_services
from approvals.models import ApprovalRequest, Approver
from authz.clients.auth import (
    AUTHENTICATED_CLIENT_META,
    assertion_audience,
    authenticate_client,
    extract_credentials,
)
from authz.constants import REFRESH_TOKEN_GRANT_TYPE
from authz.errors import OAuthError
from authz.models import TokenDetails, client_allows_grant
from authz.tokens import trail
from authz.tokens.policy import token_active, user_active

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from oauthlib.common import Request

logger = logging.getLogger(__name__)

# OpenID Connect Core 5.4: the standard claims each scope value asks for, as far as a user's record holds them.
# Countersign verifies neither addresses nor numbers (an administrator or create_approver enters them), so the
# *_verified claims are false rather than absent: a client must not take them for proven.
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name", "preferred_username"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number", "phone_number_verified"),
}


def standard_claims(user: User | None, scopes: list[str]) -> dict[str, object]:
    """The claims of OIDC Core 5.4 for the approved `scopes`, from the user's record; nothing for other scopes,
    and nothing the record does not have (an empty name is no claim)."""
    claims: dict[str, object] = {}
    if user is None:
        return claims  # client credentials: the client's own token, no person behind it
    if "profile" in scopes:
        claims.update(
            name=user.get_full_name(),
            given_name=user.first_name,
            family_name=user.last_name,
            preferred_username=user.get_username(),
        )
    if "email" in scopes and user.email:
        claims.update(email=user.email, email_verified=False)
    if "phone" in scopes:
        number = Approver.objects.filter(user=user).values_list("phone_number", flat=True).first()
        if number:
            claims.update(phone_number=number, phone_number_verified=False)
    return {name: value for name, value in claims.items() if value != ""}


class CountersignValidator(OAuth2Validator):
    """DOT's validator with Countersign's client authentication, the CIBA grant and CIBA's ID token claims."""

    def authenticate_client(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        Application = get_application_model()
        # vars(), not getattr(): oauthlib's Request answers any unknown attribute with the body parameter of that
        # name, so only an attribute our own code set can mark an internal push issuance (authz.ciba.notify).
        pushed_for = vars(request).get("countersign_push")
        if isinstance(pushed_for, Application):
            request.client = pushed_for
            request.client_id = pushed_for.client_id
            return True
        # Already authenticated by our token view (authz.views.TokenView): verifying again would refuse a
        # client_assertion, whose jti is accepted once. Only our code can put an Application there (client_auth).
        authenticated = request.headers.get(AUTHENTICATED_CLIENT_META)
        if isinstance(authenticated, Application):
            request.client = authenticated
            request.client_id = authenticated.client_id
            return True
        params = {k: v for k, v in (request.decoded_body or [])}
        authorization = request.headers.get("HTTP_AUTHORIZATION") or request.headers.get("Authorization")
        try:
            credentials = extract_credentials(authorization, params)
            # Introspection and revocation also accept an assertion addressed to themselves (RFC 7523 §3).
            endpoint = (request.uri or "").split("?", 1)[0]
            audience = assertion_audience(oauth2_settings.oidc_issuer(request).rstrip("/"), endpoint)
            application = authenticate_client(credentials, audience=audience)
        except OAuthError as exc:
            logger.info("Client authentication failed: %s", exc.description)
            return False
        request.client = application
        request.client_id = application.client_id
        return True

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        # Every agent's DOT grant type is client-credentials (create_agent_client), and DOT maps refresh_token to it:
        # DOT alone would let every agent refresh and act on its own behalf. The one policy decides instead.
        return client_allows_grant(client, grant_type)

    def validate_bearer_token(self, token: str, scopes: list[str], request: Request) -> bool:
        # RFC 9700 section 4.3.2: never from a query string (access logs, browser history). DOT's
        # COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT gate guards its resource views only; userinfo comes here.
        if oauth2_settings.COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT and "access_token" in parse_qs(
            urlsplit(request.uri or "").query, keep_blank_values=True
        ):
            return False
        # Registration tokens are for the registration endpoint only; a token of an inactive user, of a client that
        # lost the grant, or exchanged from one that no longer stands, stands nowhere (authz.tokens.policy).
        if not super().validate_bearer_token(token, scopes, request):
            return False
        return token_active(request.access_token)

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's checks (the token exists, is the client's, is not revoked or rotated away), then ours: the person is
        still active, and the grant is younger than REFRESH_TOKEN_EXPIRE_SECONDS counted from the person's approval.

        Decision: refresh rotates (ROTATE_REFRESH_TOKEN, DOT's default) and its lifetime does not slide. DOT counts
        the lifetime from the expiry of the latest access token, so an agent refreshing in time would keep the
        approval alive forever; counted from the approval, the person's decision ends when they were told it would."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            raise oauth_errors.InvalidGrantError(
                description="The refresh token is unknown, expired, revoked or already used.", request=request
            )
        refresh = vars(request)["refresh_token_instance"]  # DOT's check above found it
        if not user_active(refresh.user):
            raise oauth_errors.InvalidGrantError(description="The user is no longer active.", request=request)
        lifetime = refresh_token_expire_timedelta()
        if lifetime is not None and grant_started(refresh) + lifetime <= timezone.now():
            raise oauth_errors.InvalidGrantError(
                description="The approval this refresh token came from has expired; ask the person again.",
                request=request,
            )
        return True

    def _create_access_token(
        self, expires: datetime, request: Request, token: dict[str, Any], source_refresh_token: Any = None
    ) -> Any:
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        vars(request)["issued_access_token"] = access_token
        return access_token

    def save_bearer_token(self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any) -> object:
        """A refreshed token keeps the authorization_details the person approved (RFC 9396 §7): read them before
        DOT's rotation deletes the old access token, copy them to the new one, and answer with them."""
        source = vars(request).get("refresh_token_instance") if request.grant_type == REFRESH_TOKEN_GRANT_TYPE else None
        if source is None:
            return super().save_bearer_token(token, request, *args, **kwargs)
        with transaction.atomic():
            approved = list(
                TokenDetails.objects.filter(access_token_id=source.access_token_id).values_list(
                    "authorization_details", flat=True
                )
            )
            # Read before DOT's rotation deletes the old access token: the new one keeps the approval's time, and the
            # approval request it stood for (the deletion clears ApprovalRequest.access_token).
            granted_at = grant_started(source)
            approval_request_id = trail.request_of_token(source.access_token_id)
            result = super().save_bearer_token(token, request, *args, **kwargs)
            checksum = hashlib.sha256(token["access_token"].encode("utf-8")).hexdigest()
            access_token = get_access_token_model().objects.filter(token_checksum=checksum).first()
            # The grace-period path answers with a token refreshed before, which already has its copy.
            details = TokenDetails.objects.filter(access_token=access_token).first() if access_token else None
            if details is None and access_token is not None:
                details = TokenDetails.objects.create(
                    access_token=access_token,
                    authorization_details=approved[0] if approved else [],
                    granted_at=granted_at,
                )
                if approval_request_id is not None:
                    approval_services.approval_request_token_refreshed(
                        approval_request_id=approval_request_id,
                        access_token=access_token,
                        at=timezone.now(),
                        client_id=request.client_id,
                        **trail.token_label(access_token),
                        refresh_token_id=source.pk,
                    )
            if details is not None and details.authorization_details:
                token["authorization_details"] = details.authorization_details
        return result

    def get_userinfo_claims(self, request: Request) -> dict[str, object]:
        # The person approved these scopes on the page ("See your name and username"): userinfo answers them. The
        # ID token keeps to sub (OIDC Core 5.4: with an access token issued, these claims come from userinfo), so
        # personal data stays out of push callbacks and the logs of clients that only need to know who approved.
        if request.user is None:
            # A client credentials token: the agent's own, with no person to describe (DOT would fail on it).
            raise oauth_errors.InvalidTokenError(
                description="This access token was issued to the client itself and names no user.", request=request
            )
        claims: dict[str, object] = super().get_userinfo_claims(request)
        claims.update(standard_claims(request.user, list(request.scopes or [])))
        return claims

    def get_discovery_claims(self, request: Request) -> list[str]:
        return ["sub", *(claim for claims in SCOPE_CLAIMS.values() for claim in claims)]

    def get_oidc_issuer_endpoint(self, request: Request) -> str:
        issuer = vars(request).get("countersign_issuer")  # set by authz.ciba.notify only (see authenticate_client)
        if (
            isinstance(issuer, str)
            and issuer
            and isinstance(vars(request).get("countersign_push"), get_application_model())
        ):
            return issuer
        endpoint: str = super().get_oidc_issuer_endpoint(request)
        return endpoint

    def get_id_token_dictionary(
        self, token: dict[str, Any], token_handler: Any, request: Request
    ) -> tuple[dict[str, Any], datetime]:
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        approval_request = vars(request).get("approval_request")  # not a body parameter (see authenticate_client)
        if isinstance(approval_request, ApprovalRequest):
            # The person authenticated when they approved, not when they last signed in anywhere.
            if approval_request.auth_time:
                claims["auth_time"] = int(approval_request.auth_time.astimezone(UTC).timestamp())
            if approval_request.acr:
                claims["acr"] = approval_request.acr
            if isinstance(vars(request).get("countersign_push"), get_application_model()):
                # CIBA Core §10.3.1: the push ID token names its request and binds the refresh token.
                claims["urn:openid:params:jwt:claim:auth_req_id"] = approval_request.auth_req_id
                if token.get("refresh_token"):
                    claims["urn:openid:params:jwt:claim:rt_hash"] = _left_hash(token["refresh_token"])
        return claims, expiration_time


def grant_started(refresh_token: Any) -> datetime:
    """When the person approved the grant `refresh_token` belongs to (TokenDetails.granted_at of its access token).
    Tokens issued before that was recorded count from their access token's details, else from the refresh token."""
    access_token_id = refresh_token.access_token_id
    if access_token_id is None:
        # Rotated within the grace period: the access token it was rotated into carries the grant.
        access_token_id = (
            get_access_token_model()
            .objects.filter(source_refresh_token=refresh_token)
            .values_list("pk", flat=True)
            .first()
        )
    details = TokenDetails.objects.filter(access_token_id=access_token_id).first() if access_token_id else None
    if details is not None:
        return details.granted_at or details.created_at
    created: datetime = refresh_token.created
    return created


def _left_hash(value: str) -> str:
    """OpenID Connect Core §3.3.2.11 (at_hash) for RS256: the left half of SHA-256, base64url."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
