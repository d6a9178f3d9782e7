"""Token responses for push-mode clients (CIBA Core §10.3.1), issued by the same oauthlib grant as the token endpoint.

The notification task (approvals.notifications) calls `issue_push_tokens` inside the transaction that stores the
encrypted response, so the request is consumed and the tokens are issued exactly once. The client is not
authenticated here (there is no HTTP request from it): `countersign_push` marks the oauthlib request so the validator
accepts the client the request belongs to, and adds the push-only ID token claims.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request

from approvals.models import ApprovalRequest


class PushTokenError(Exception):
    pass


def issue_push_tokens(approval_request: ApprovalRequest) -> dict[str, Any]:
    server = get_oauthlib_core().server
    issuer = oauth2_settings.OIDC_ISS_ENDPOINT or settings.PUBLIC_URL
    body = urlencode({"grant_type": settings.CIBA_GRANT_TYPE, "auth_req_id": approval_request.auth_req_id})
    request = Request(
        f"{issuer}/oauth/token/", http_method="POST", body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    request.countersign_push = approval_request.client
    # No HTTP request to derive the issuer from (DOT would build one from the missing Host header): the ID token
    # names the configured public issuer (CountersignValidator.get_oidc_issuer_endpoint).
    request.countersign_issuer = issuer
    request.client = approval_request.client
    request.client_id = approval_request.client.client_id
    request.grant_type = settings.CIBA_GRANT_TYPE
    request.auth_req_id = approval_request.auth_req_id
    _headers, response_body, status = server.ciba_grant.create_token_response(request, server.default_token_type)
    token = json.loads(response_body)
    if status != 200:
        raise PushTokenError(f"{token.get('error')}: {token.get('error_description', '')}")
    return {"auth_req_id": approval_request.auth_req_id, **token}
