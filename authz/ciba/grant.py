"""The CIBA grant for oauthlib (CIBA Core §10.1, §11): oauthlib has none (oauthlib/oauthlib#890).

The token view answers pending, denied and expired requests itself (no oauthlib round trip on the hot path) and
only hands approved requests to this grant, which consumes the request and issues DOT's tokens in one
transaction, so tokens are issued at most once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase
from oauthlib.openid.connect.core.grant_types.base import GrantTypeBase as OIDCGrantTypeBase

from approvals import services as approval_services
from approvals.models import ApprovalRequest
from authz.ciba import answers
from authz.constants import CIBA_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE
from authz.models import TokenDetails, client_allows_grant
from authz.tokens.policy import user_active

if TYPE_CHECKING:
    from oauthlib.common import Request
    from oauthlib.oauth2 import RequestValidator
    from oauthlib.oauth2.rfc6749.grant_types.base import _TokenModifier
    from oauthlib.oauth2.rfc6749.tokens import TokenBase

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status


class CibaTokenError(errors.OAuth2Error):
    def __init__(self, error: str, description: str, request: Request | None = None) -> None:
        self.error = error
        super().__init__(description=description, request=request)


class CibaGrant(GrantTypeBase):
    # Always built with DOT's validator (CountersignServer); the private members are oauthlib's, left out of its stubs.
    request_validator: RequestValidator
    _token_modifiers: list[_TokenModifier]
    _get_default_headers: Callable[[], dict[str, str]]

    def create_token_response(self, request: Request, token_handler: TokenBase) -> tuple[dict[str, str], str, int]:
        headers = self._get_default_headers()
        try:
            approval_request = self.validate_token_request(request)
            with transaction.atomic():
                if not approval_services.approval_request_consume(approval_request_id=approval_request.pk):
                    # Another poll won the race, or the request expired meanwhile.
                    answer = answers.CONSUMED
                    raise CibaTokenError(answer.error, answer.description, request)
                # The client-capability policy: refresh tokens only while the client may refresh.
                refresh = client_allows_grant(request.client, REFRESH_TOKEN_GRANT_TYPE)
                # oauthlib hands its grants a BearerToken; its stubs type it as TokenBase, which has no create_token.
                token = token_handler.create_token(request, refresh_token=refresh)  # type: ignore[attr-defined]
                for modifier in self._token_modifiers:
                    token = modifier(token, token_handler, request)
                self.request_validator.save_token(token, request)
                approval_services.approval_request_attach_token(
                    approval_request_id=approval_request.pk, access_token=request.issued_access_token
                )
                # RFC 9396 §7: the token carries exactly what the person approved (introspection reads it back;
                # refreshed tokens inherit it, CountersignValidator.save_bearer_token).
                TokenDetails.objects.update_or_create(
                    access_token=request.issued_access_token,
                    defaults={
                        "authorization_details": approval_request.authorization_details,
                        # Refresh counts the refresh token's lifetime from here (CountersignValidator).
                        "granted_at": approval_request.decided_at or timezone.now(),
                    },
                )
                if approval_request.authorization_details:
                    token["authorization_details"] = approval_request.authorization_details
        except errors.OAuth2Error as e:
            headers.update(e.headers)
            return headers, e.json, e.status_code
        logger.info("Issued tokens for approval request %s to client %s", approval_request.pk, request.client_id)
        return headers, json.dumps(token), 200

    def validate_token_request(self, request: Request) -> ApprovalRequest:
        if request.grant_type != CIBA_GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        if not request.auth_req_id:
            raise errors.InvalidRequestError(description="auth_req_id is required.", request=request)
        if not self.request_validator.authenticate_client(request) or request.client is None:
            raise errors.InvalidClientError(request=request)
        self.validate_grant_type(request)
        request.client_id = request.client_id or request.client.client_id
        approval_request = ApprovalRequest.objects.filter(
            auth_req_id=request.auth_req_id, client=request.client
        ).first()
        if approval_request is None:
            raise errors.InvalidGrantError(description="Unknown auth_req_id.", request=request)
        answer = answers.answer_for(approval_request.effective_status(timezone.now()))
        if answer is not None:
            raise CibaTokenError(answer.error, answer.description, request)
        if not user_active(approval_request.user):
            # A person deactivated after approving: their tokens would stand nowhere (authz.tokens.policy).
            raise errors.InvalidGrantError(description="The user is no longer active.", request=request)
        vars(request)["approval_request"] = approval_request  # ours, not a body parameter (CountersignValidator)
        request.user = approval_request.user
        request.scopes = approval_request.scopes
        request.claims = None
        request.nonce = None
        return approval_request


class OpenIDCibaGrant(OIDCGrantTypeBase):
    """Adds the ID token (CIBA Core §10.1.1: the token response is an OIDC one)."""

    def __init__(self, request_validator: RequestValidator | None = None, **kwargs: Any) -> None:
        self.proxy_target = CibaGrant(request_validator=request_validator, **kwargs)
        self.register_token_modifier(self.add_id_token)
