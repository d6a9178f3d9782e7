"""JWT access tokens (RFC 9068) with ACCESS_TOKEN_FORMAT=jwt: verified offline with /oauth/jwks/ as a resource
server would, and still stored, introspected and revoked like opaque ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from django.test import Client
from oauth2_provider.views.mixins import OAuthLibMixin

from tests import factories
from tests.authz.tokens.test_token_exchange import (
    ACCESS_TOKEN_TYPE,
    BANK,
    PAYMENT,
    TOKEN_EXCHANGE,
    introspect,
    token_row,
)

pytestmark = pytest.mark.django_db


def _forget_oauthlib_cores() -> None:
    # DOT's views keep the oauthlib server (with its token generator) on the view class after the first request.
    pending = [OAuthLibMixin]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "_oauthlib_core" in vars(cls):
            delattr(cls, "_oauthlib_core")


def use_jwt_access_tokens(settings: Any) -> Iterator[None]:
    """What config/settings.py sets for ACCESS_TOKEN_FORMAT=jwt (it is read once, at import), for one test."""
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "ACCESS_TOKEN_GENERATOR": "authz.tokens.access.signed_access_token",
        "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    }
    _forget_oauthlib_cores()
    yield
    _forget_oauthlib_cores()


@pytest.fixture(autouse=True)
def jwt_format(settings) -> Iterator[None]:
    yield from use_jwt_access_tokens(settings)


def verify_offline(value: str, *, audience: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a resource server does (RFC 9068 §4): the key from the JWKS by kid, RS256 only, typ at+jwt, iss, aud."""
    header = jwt.get_unverified_header(value)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    keys = {key["kid"]: key for key in Client().get("/oauth/jwks/").json()["keys"]}
    claims = jwt.decode(
        value,
        key=jwt.PyJWK(keys[header["kid"]]),
        algorithms=["RS256"],
        audience=audience,
        issuer="http://testserver",
        options={"require": ["exp", "iat", "iss", "aud", "sub", "client_id", "jti"]},
    )
    return header, claims


def ciba_tokens(agent: Any, approver: Any, **kwargs: Any) -> dict[str, Any]:
    approval_request = factories.make_approval_request(approver, agent, **kwargs)
    factories.decide(approval_request.auth_req_id)
    response = agent.poll(approval_request.auth_req_id)
    assert response.status_code == 200, response.content
    return response.json()


def test_ciba_access_token_is_a_signed_jwt(agent, approver):
    tokens = ciba_tokens(agent, approver, scope="openid profile", authorization_details=[PAYMENT])

    header, claims = verify_offline(tokens["access_token"], audience=agent.client_id)

    id_token_header = jwt.get_unverified_header(tokens["id_token"])
    assert header["kid"] == id_token_header["kid"]
    assert claims["aud"] == agent.client_id
    assert claims["sub"] == str(approver.user.pk)
    assert claims["client_id"] == agent.client_id
    assert claims["scope"] == "openid profile"
    assert claims["authorization_details"] == [PAYMENT]
    assert claims["exp"] - claims["iat"] == tokens["expires_in"]
    assert "act" not in claims

    # Stored like an opaque token: introspection and revocation work on it.
    answer = introspect(agent, tokens["access_token"])
    assert answer["active"] is True
    assert answer["sub"] == claims["sub"]
    assert answer["authorization_details"] == [PAYMENT]
    assert agent.post("/oauth/revoke/", {"token": tokens["access_token"]}).status_code == 200
    assert introspect(agent, tokens["access_token"]) == {"active": False}


def test_each_token_has_its_own_jti(agent, approver):
    first = verify_offline(ciba_tokens(agent, approver)["access_token"], audience=agent.client_id)[1]
    second = verify_offline(ciba_tokens(agent, approver)["access_token"], audience=agent.client_id)[1]

    assert first["jti"] != second["jti"]


def test_refresh_tokens_stay_opaque_and_refreshed_tokens_keep_the_details(agent, approver):
    tokens = ciba_tokens(agent, approver, scope="openid", authorization_details=[PAYMENT])
    assert tokens["refresh_token"].count(".") == 0 and len(tokens["refresh_token"]) < 100

    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})

    assert refreshed.status_code == 200, refreshed.content
    _header, claims = verify_offline(refreshed.json()["access_token"], audience=agent.client_id)
    assert claims["authorization_details"] == [PAYMENT]
    assert claims["scope"] == "openid"


def test_exchanged_token_carries_act_audience_and_narrowed_details(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    subject = ciba_tokens(agent, approver, scope="openid profile", authorization_details=[PAYMENT])["access_token"]
    narrower = {**PAYMENT, "actions": ["status"]}

    response = agent.post(
        "/oauth/token/",
        [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("resource", BANK),
            ("audience", booker.client_id),
            ("scope", "profile"),
            ("authorization_details", json.dumps([narrower])),
        ],
    )

    assert response.status_code == 200, response.content
    body = response.json()
    _header, claims = verify_offline(body["access_token"], audience=BANK)
    assert claims["aud"] == [BANK, booker.client_id]
    assert claims["act"] == {"sub": agent.client_id}
    assert claims["authorization_details"] == [narrower]
    assert claims["scope"] == "profile"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["exp"] <= int(token_row(subject).expires.timestamp())
    assert introspect(agent, body["access_token"])["act"] == {"sub": agent.client_id}


def test_client_credentials_token_names_the_client_as_subject(make_agent):
    worker = make_agent(name="Worker", client_credentials_enabled=True)

    response = worker.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})

    assert response.status_code == 200, response.content
    _header, claims = verify_offline(response.json()["access_token"], audience=worker.client_id)
    assert claims["sub"] == worker.client_id


def test_a_tampered_token_fails_offline_verification(agent, approver):
    value = ciba_tokens(agent, approver)["access_token"]
    head, payload, signature = value.split(".")
    forged = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])

    with pytest.raises(jwt.InvalidTokenError):
        verify_offline(forged, audience=agent.client_id)
    assert introspect(agent, forged) == {"active": False}
