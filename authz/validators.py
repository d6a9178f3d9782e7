from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC

from django.conf import settings
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_validators import GRANT_TYPE_MAPPING, OAuth2Validator

from approvals.models import ApprovalRequest

from .client_auth import authenticate_client, ciba_settings, extract_credentials
from .errors import OAuthError

logger = logging.getLogger(__name__)


class CountersignValidator(OAuth2Validator):
    """DOT's validator with Countersign's client authentication, the CIBA grant and CIBA's ID token claims."""

    def authenticate_client(self, request, *args, **kwargs) -> bool:
        # vars(), not getattr(): oauthlib's Request answers any unknown attribute with the body parameter of that
        # name, so only an attribute our own code set can mark an internal push issuance (authz.push).
        pushed_for = vars(request).get("countersign_push")
        if isinstance(pushed_for, get_application_model()):
            request.client = pushed_for
            request.client_id = pushed_for.client_id
            return True
        params = {k: v for k, v in (request.decoded_body or [])}
        authorization = request.headers.get("HTTP_AUTHORIZATION") or request.headers.get("Authorization")
        try:
            credentials = extract_credentials(authorization, params)
            application = authenticate_client(credentials)
        except OAuthError as exc:
            logger.info("Client authentication failed at the token endpoint: %s", exc.description)
            return False
        request.client = application
        request.client_id = application.client_id
        return True

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs) -> bool:
        ciba = ciba_settings(client)
        if grant_type == settings.CIBA_GRANT_TYPE:
            return bool(ciba and ciba.ciba_enabled)
        if grant_type == "refresh_token" and ciba and ciba.ciba_enabled and ciba.refresh_tokens:
            return True
        if grant_type not in GRANT_TYPE_MAPPING:
            return False
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        access_token = super()._create_access_token(expires, request, token, source_refresh_token)
        request.issued_access_token = access_token
        return access_token

    def get_oidc_issuer_endpoint(self, request) -> str:
        issuer = vars(request).get("countersign_issuer")  # set by authz.push only (see authenticate_client)
        if (
            isinstance(issuer, str)
            and issuer
            and isinstance(vars(request).get("countersign_push"), get_application_model())
        ):
            return issuer
        return super().get_oidc_issuer_endpoint(request)

    def get_id_token_dictionary(self, token, token_handler, request):
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


def _left_hash(value: str) -> str:
    """OpenID Connect Core §3.3.2.11 (at_hash) for RS256: the left half of SHA-256, base64url."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
