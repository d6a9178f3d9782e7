"""Discovery: the OpenID Provider and RFC 8414 metadata documents advertise CIBA poll mode, and the JWKS."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings as django_settings

from approvals import services
from approvals.models import ApprovalRequest

pytestmark = pytest.mark.django_db

DOCUMENTS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
CIBA = "urn:openid:params:grant-type:ciba"


def fetch(client, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def issue_id_token(agent, approver) -> str:
    ack = agent.bc_authorize(scope="openid", login_hint=approver.user.username)
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    assert services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)
    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.content
    return tokens.json()["id_token"]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_metadata_advertises_ciba_poll_mode(client, path):
    data = fetch(client, path)

    assert data["issuer"] == "http://testserver"
    assert data["backchannel_authentication_endpoint"] == "http://testserver/oauth/bc-authorize/"
    assert data["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]
    assert isinstance(data["backchannel_user_code_parameter_supported"], bool)
    assert data["backchannel_user_code_parameter_supported"] is True
    assert CIBA in data["grant_types_supported"]
    assert data["token_endpoint"] == "http://testserver/oauth/token/"
    assert data["jwks_uri"] == "http://testserver/oauth/jwks/"
    assert set(data["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }


def test_openid_configuration_also_answers_with_a_trailing_slash(client):
    assert fetch(client, "/.well-known/openid-configuration/")["issuer"] == "http://testserver"


def test_openid_configuration_names_the_oidc_endpoints(client):
    data = fetch(client, "/.well-known/openid-configuration")
    assert data["userinfo_endpoint"] == "http://testserver/oauth/userinfo/"
    assert "RS256" in data["id_token_signing_alg_values_supported"]
    assert "openid" in data["scopes_supported"]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_metadata_issuer_follows_the_request_host(client, path):
    response = client.get(path, HTTP_HOST="auth.internal:8443")
    assert response.status_code == 200
    data = response.json()
    assert data["issuer"] == "http://auth.internal:8443"
    assert data["backchannel_authentication_endpoint"] == "http://auth.internal:8443/oauth/bc-authorize/"


@pytest.mark.parametrize("path", DOCUMENTS)
def test_user_code_support_follows_the_setting(client, settings, path):
    settings.AUTHZ = {**django_settings.AUTHZ, "USER_CODE_SUPPORTED": False}
    assert fetch(client, path)["backchannel_user_code_parameter_supported"] is False


@pytest.mark.parametrize("path", DOCUMENTS)
def test_fixed_issuer_overrides_the_request(client, settings, path):
    settings.OAUTH2_PROVIDER = {**django_settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": "https://auth.example.com"}
    response = client.get(path, HTTP_HOST="evil.example.net")
    assert response.status_code == 200
    data = response.json()

    assert data["issuer"] == "https://auth.example.com"
    assert data["backchannel_authentication_endpoint"] == "https://auth.example.com/oauth/bc-authorize/"
    assert data["token_endpoint"] == "https://auth.example.com/oauth/token/"
    assert data["jwks_uri"] == "https://auth.example.com/oauth/jwks/"


def test_fixed_issuer_is_the_id_token_issuer(client, settings, agent, approver):
    settings.OAUTH2_PROVIDER = {**django_settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": "https://auth.example.com"}
    id_token = issue_id_token(agent, approver)
    assert jwt.decode(id_token, options={"verify_signature": False})["iss"] == "https://auth.example.com"


def test_jwks_serves_the_rsa_key_that_signs_id_tokens(client, agent, approver):
    jwks_uri = fetch(client, "/.well-known/openid-configuration")["jwks_uri"]
    response = client.get(jwks_uri.removeprefix("http://testserver"))
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kty"] == "RSA"
    assert key["alg"] == "RS256" and key["use"] == "sig"
    assert key["kid"] and key["n"] and key["e"]
    assert "d" not in key and "p" not in key  # public only

    id_token = issue_id_token(agent, approver)
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    assert header["kid"] == key["kid"]
    claims = jwt.decode(id_token, key=jwt.PyJWK(key), algorithms=["RS256"], audience=agent.client_id)
    assert claims["iss"] == "http://testserver"
    assert claims["sub"] == str(approver.user.pk)


@pytest.mark.parametrize("path", DOCUMENTS)
def test_metadata_lists_the_request_signing_algorithms(client, path):
    # CIBA Core §4: the algorithms a signed authentication request may use; none MUST NOT be listed.
    algs = fetch(client, path)["backchannel_authentication_request_signing_alg_values_supported"]
    assert algs == ["RS256", "PS256", "ES256", "EdDSA"]
    assert "none" not in algs
