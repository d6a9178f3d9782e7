"""Agent-to-agent: the client_credentials grant (RFC 6749 §4.4), an agent acting on its own behalf with a secret or
with private_key_jwt, only when its CibaClient allows it, within its allowed scopes; no ID token, no refresh token."""

from __future__ import annotations

import pytest

from tests import factories
from tests.authz.clients.test_private_key_jwt import make_signer

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def grant(agent, **params: str):
    return agent.post("/oauth/token/", {"grant_type": "client_credentials", **params})


def test_a_client_not_allowed_is_unauthorized_client(make_agent):
    agent = make_agent()
    body = factories.assert_oauth_error(grant(agent, scope="openid"), 400, "unauthorized_client")
    assert "client_credentials" in body["error_description"]


def test_an_allowed_secret_client_gets_an_access_token_only(make_agent):
    agent = make_agent(client_credentials_enabled=True)
    response = grant(agent, scope="introspection")
    assert response.status_code == 200, response.content
    token = response.json()
    assert token["access_token"] and token["token_type"] == "Bearer"
    assert token["scope"] == "introspection"
    assert "refresh_token" not in token and "id_token" not in token


def test_an_allowed_private_key_jwt_client_gets_a_token_and_introspects_it(db):
    signer = make_signer("EdDSA", client_credentials_enabled=True, allowed_scopes="introspection profile")
    response = signer.post("/oauth/token/", signer.params(grant_type="client_credentials", scope="introspection"))
    assert response.status_code == 200, response.content
    token = response.json()
    assert "refresh_token" not in token and "id_token" not in token

    introspection = signer.post("/oauth/introspect/", signer.params(token=token["access_token"]))
    assert introspection.status_code == 200, introspection.content
    data = introspection.json()
    assert data["active"] is True
    assert data["client_id"] == signer.client_id
    assert data["scope"] == "introspection"
    assert "username" not in data  # the agent's own token: no person behind it


def test_a_private_key_jwt_client_not_allowed_is_unauthorized_client(db):
    signer = make_signer()
    response = signer.post("/oauth/token/", signer.params(grant_type="client_credentials", scope="openid"))
    factories.assert_oauth_error(response, 400, "unauthorized_client")


def test_scopes_are_limited_to_the_allowed_ones(make_agent):
    agent = make_agent(client_credentials_enabled=True, allowed_scopes="introspection")
    body = factories.assert_oauth_error(grant(agent, scope="introspection email"), 400, "invalid_scope")
    assert "introspection" in body["error_description"]
    assert grant(agent, scope="introspection").status_code == 200
    # No scope asked: the server's default (openid) is not among this client's scopes either.
    factories.assert_oauth_error(grant(agent), 400, "invalid_scope")


def test_unknown_scopes_are_refused(make_agent):
    agent = make_agent(client_credentials_enabled=True)
    assert grant(agent, scope="launch-missiles").json()["error"] == "invalid_scope"


def test_a_wrong_secret_is_invalid_client(make_agent):
    agent = make_agent(client_credentials_enabled=True)
    agent.client_secret = "wrong"
    factories.assert_oauth_error(grant(agent, scope="openid"), 401, "invalid_client")


def test_without_credentials_it_is_invalid_client(make_agent, client):
    agent = make_agent(client_credentials_enabled=True)
    response = client.post(
        "/oauth/token/",
        f"grant_type=client_credentials&client_id={agent.client_id}",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_the_validator_gates_the_grant_even_without_the_view(make_agent):
    """DOT would allow client-credentials for every agent (their DOT grant type); the validator says no."""
    from oauthlib.common import Request

    from authz.validators import CountersignValidator

    validator = CountersignValidator()
    allowed = make_agent(client_credentials_enabled=True).application
    refused = make_agent().application
    request = Request("http://testserver/oauth/token/")
    assert validator.validate_grant_type(allowed.client_id, "client_credentials", allowed, request) is True
    assert validator.validate_grant_type(refused.client_id, "client_credentials", refused, request) is False
