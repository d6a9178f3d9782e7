from __future__ import annotations

import logging
from datetime import UTC

from django.conf import settings
from oauth2_provider.oauth2_validators import GRANT_TYPE_MAPPING, OAuth2Validator

from .client_auth import authenticate_client, ciba_settings, extract_credentials
from .errors import OAuthError

logger = logging.getLogger(__name__)


class CountersignValidator(OAuth2Validator):
    """DOT's validator with Countersign's client authentication, the CIBA grant and CIBA's ID token claims."""

    def authenticate_client(self, request, *args, **kwargs) -> bool:
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

    def get_id_token_dictionary(self, token, token_handler, request):
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        approval_request = getattr(request, "approval_request", None)
        if approval_request is not None:
            # The person authenticated when they approved, not when they last signed in anywhere.
            if approval_request.auth_time:
                claims["auth_time"] = int(approval_request.auth_time.astimezone(UTC).timestamp())
            if approval_request.acr:
                claims["acr"] = approval_request.acr
        return claims, expiration_time
