from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauthlib.openid import Server

from authz.ciba.grant import OpenIDCibaGrant
from authz.constants import CIBA_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE
from authz.errors import wire_safe_error_body
from authz.tokens import exchange, trail

if TYPE_CHECKING:
    from oauthlib.common import _HTTPMethod
    from oauthlib.oauth2 import RequestValidator


class CountersignServer(Server):
    """oauthlib's OpenID Connect server with the CIBA and token exchange (RFC 8693) grants registered at the token
    endpoint, and revocation that reaches the tokens exchanged from a revoked one."""

    # oauthlib's token endpoint keeps its grants by grant_type here; the stubs leave the private attribute out.
    _grant_types: dict[str, Any]

    def __init__(self, request_validator: RequestValidator, *args: Any, **kwargs: Any) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self.ciba_grant = OpenIDCibaGrant(request_validator)
        self._grant_types[CIBA_GRANT_TYPE] = self.ciba_grant
        self.token_exchange_grant = exchange.TokenExchangeGrant(request_validator)
        self._grant_types[TOKEN_EXCHANGE_GRANT_TYPE] = self.token_exchange_grant

    def create_revocation_response(
        self,
        uri: str,
        http_method: _HTTPMethod = "POST",
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, str], str, int]:
        # RFC 7009 plus our decision in authz.tokens.exchange.token_family_lock: exchanged tokens go with their subject.
        token_value = _body_param(body, "token")
        if not token_value:
            return super().create_revocation_response(uri, http_method, body, headers)
        with transaction.atomic():
            family = exchange.token_family_lock(token_value)
            # Its approval request's trail records the revocation (issue 18): read before the row goes.
            target = trail.revocation_target(family[0]) if family is not None else None
            resp_headers, resp_body, status = super().create_revocation_response(uri, http_method, body, headers)
            if family is not None and status == 200:
                root_id, downstream_ids = family
                revoked = exchange.exchanged_tokens_revoke(root_id=root_id, downstream_ids=downstream_ids)
                if target is not None:
                    trail.record_revoked(target=target, exchanged=revoked, at=timezone.now(), via="revocation_endpoint")
        return resp_headers, resp_body, status

    def create_token_response(
        self,
        uri: str,
        http_method: _HTTPMethod = "POST",
        body: str | dict[str, str] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[dict[str, str], str, int]:
        # A rotated refresh token deletes the access token it was issued with (DOT's RefreshToken.revoke): the tokens
        # exchanged from that access token go with it, as on revocation (authz.tokens.exchange.token_family_lock).
        form = body if isinstance(body, str) else None  # DOT hands oauthlib the body urlencoded
        refresh_value = (
            _body_param(form, "refresh_token") if _body_param(form, "grant_type") == REFRESH_TOKEN_GRANT_TYPE else ""
        )
        if not refresh_value:
            response: tuple[dict[str, str], str, int] = super().create_token_response(
                uri, http_method, body, headers, *args, **kwargs
            )
            return response
        with transaction.atomic():
            family = exchange.token_family_lock(refresh_value)
            resp_headers, resp_body, status = super().create_token_response(
                uri, http_method, body, headers, *args, **kwargs
            )
            if family is not None and status == 200:
                root_id, downstream_ids = family
                exchange.exchanged_tokens_revoke(root_id=root_id, downstream_ids=downstream_ids)
        return resp_headers, resp_body, status


def _body_param(body: str | None, name: str) -> str:
    try:
        value = dict(parse_qsl(body or "", keep_blank_values=True)).get(name) or ""
    except ValueError:
        return ""
    return "" if "\x00" in value else value


class CountersignOAuthLibCore(OAuthLibCore):
    """DOT's glue to oauthlib, keeping every value of a repeated parameter in a token exchange request: RFC 8693
    §2.1 lets `audience` repeat like `resource`, and repeats of the other parameters must be refused, not merged."""

    def extract_body(self, request: HttpRequest) -> list[tuple[str, str]]:
        if request.POST.get("grant_type") == TOKEN_EXCHANGE_GRANT_TYPE:
            return [(key, value) for key, values in request.POST.lists() for value in values]
        body: list[tuple[str, str]] = super().extract_body(request)
        return body

    # DOT's token and revocation views get oauthlib's answers here, errors included (also those oauthlib raises
    # before a grant runs, which DOT's core renders itself): the one place to make them wire-safe.
    def create_token_response(self, request: HttpRequest) -> tuple[str | None, dict[str, str], str, int]:
        uri, headers, body, status = super().create_token_response(request)
        return (uri, *_wire_safe(headers, body, status))

    def create_revocation_response(self, request: HttpRequest) -> tuple[str | None, dict[str, str], str, int]:
        uri, headers, body, status = super().create_revocation_response(request)
        return (uri, *_wire_safe(headers, body, status))


def _wire_safe(headers: dict[str, str], body: str, status: int) -> tuple[dict[str, str], str, int]:
    """An oauthlib error answer within RFC 6749 §5.2: our grants' descriptions quote request parameters, and
    oauthlib puts descriptions on the wire as they are."""
    if status >= 400 and body:
        body = wire_safe_error_body(body)
        # Errors oauthlib's endpoints raise before a grant runs (a query string, say) come without headers, which
        # DOT's views would send as text/html; RFC 6749 §5.2 answers in application/json.
        headers = {"Content-Type": "application/json", **headers}
    return headers, body, status
