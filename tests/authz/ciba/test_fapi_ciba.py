"""The FAPI-CIBA profile at request time (FAPI-CIBA §5.2.2, FAPI 1.0 Advanced §8.6): a client with the flag sends
only signed requests, with PS256 or ES256, and always a binding_message."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from django.test import Client

from approvals.models import ApprovalRequest
from tests import factories
from tests.authz.clients.test_signed_requests import (
    BC_AUTHORIZE,
    ISSUER,
    MISSING,
    SigningAgent,
    assert_refused,
    make_signing_agent,
    private_key,
    public_jwk,
    unsigned_jwt,
)
from tests.conftest import CIBA, FORM
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def make_fapi_agent(make_agent, alg: str = "PS256", **fields) -> SigningAgent:
    # Client secrets stand in for private_key_jwt here, to test the request rules on their own; the last test
    # runs the profile as registered (CibaClient.clean), with private_key_jwt.
    return make_signing_agent(make_agent, alg, name=f"FAPI {alg}", fapi_ciba=True, **fields)


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_a_fapi_client_signed_request_with_a_binding_message_is_accepted(make_agent, approver, alg):
    fapi = make_fapi_agent(make_agent, alg)

    response = fapi.send_claims(binding_message="1234")

    assert response.status_code == 200, response.content
    approval_request = ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])
    assert approval_request.binding_message == "1234"


@pytest.mark.parametrize("binding_message", [MISSING, ""], ids=["missing", "empty"])
def test_a_fapi_request_without_a_binding_message_is_invalid_request(make_agent, approver, binding_message):
    # FAPI-CIBA §5.2.2 requires the parameter; a missing required parameter is invalid_request (CIBA Core §13), as
    # the conformance suite's ConnectID module ...-without-binding-message-fails expects.
    fapi = make_fapi_agent(make_agent)
    assert_refused(fapi.send_claims(binding_message=binding_message), "binding_message is required")


def test_a_fapi_binding_message_that_is_unacceptable_is_invalid_binding_message(make_agent, approver):
    fapi = make_fapi_agent(make_agent)
    response = fapi.send_claims(binding_message="x" * 65)
    factories.assert_oauth_error(response, 400, "invalid_binding_message")


def test_rs256_from_a_fapi_client_is_invalid_request(make_agent, approver):
    # Conformance test fapi-ciba-id1-ensure-request-object-signature-algorithm-is-rs256-fails.
    fapi = make_fapi_agent(make_agent)
    token = fapi.sign(fapi.claims(), alg="RS256")
    assert_refused(fapi.send(token), "PS256 or ES256", "RS256")


@pytest.mark.parametrize(("registered", "alg"), [("RS256", "RS256"), ("EdDSA", "EdDSA")])
def test_a_fapi_client_registered_against_the_rules_still_cannot_use_other_algs(make_agent, approver, registered, alg):
    # Registration refuses these (CibaClient.clean); a row written around it is still held to FAPI at request time.
    fapi = make_fapi_agent(make_agent, registered)
    assert_refused(fapi.send(fapi.sign(fapi.claims(), alg=alg)), "PS256 or ES256")


def test_alg_none_from_a_fapi_client_is_invalid_request(make_agent, approver):
    fapi = make_fapi_agent(make_agent)
    assert_refused(fapi.send(unsigned_jwt(fapi.claims())), "none")


def test_an_unsigned_fapi_request_is_invalid_request(make_agent, approver):
    # Conformance test fapi-ciba-id1-ensure-unsigned-backchannel-authorization-request-fails.
    fapi = make_fapi_agent(make_agent)
    response = fapi.agent.bc_authorize(scope="openid", login_hint="alice", binding_message="1234")
    assert_refused(response, "signed request")


def test_a_fapi_flag_without_a_registered_alg_still_requires_a_signed_request(make_agent, approver):
    agent = make_agent(name="FAPI without alg", fapi_ciba=True)
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="1234")
    assert_refused(response, "signed request")


def post_form(path: str, form: dict[str, str], http: Client | None = None):
    return (http or Client()).post(path, urlencode(form), content_type=FORM)


def make_pkjwt_fapi_agent(make_agent, keys: dict[str, Any], *, request_alg: str = "PS256", **fields: Any):
    """A FAPI-CIBA agent that authenticates with private_key_jwt; `keys` maps each kid to its private key."""
    return make_agent(
        name="FAPI agent",
        jwks={"keys": [public_jwk(key, kid=kid) for kid, key in keys.items()]},
        backchannel_authentication_request_signing_alg=request_alg,
        token_endpoint_auth_method="private_key_jwt",
        fapi_ciba=True,
        **fields,
    )


def _assertion(client_id: str, key, kid: str, *, alg: str = "PS256") -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def test_a_fapi_client_with_private_key_jwt_and_a_signed_request_gets_tokens(make_agent, approver):
    request_key, auth_key = private_key("PS256", "fapi-request"), private_key("ES256", "fapi-auth")
    agent = make_pkjwt_fapi_agent(
        make_agent, {"request": request_key, "auth": auth_key}, token_endpoint_auth_signing_alg="ES256"
    )
    agent.application.ciba.full_clean()  # registered exactly as FAPI-CIBA requires
    fapi = SigningAgent(agent=agent, alg="PS256", key=request_key, kid="request")
    http = Client()

    ack = post_form(
        BC_AUTHORIZE,
        {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion(agent.client_id, auth_key, "auth", alg="ES256"),
            "request": fapi.sign(fapi.claims(binding_message="1234")),
        },
        http,
    )
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    factories.decide(auth_req_id)

    tokens = post_form(
        "/oauth/token/",
        {
            "grant_type": CIBA,
            "auth_req_id": auth_req_id,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion(agent.client_id, auth_key, "auth", alg="ES256"),
        },
        http,
    )
    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["access_token"]


def test_a_fapi_client_with_private_key_jwt_still_needs_a_signed_request(make_agent, approver):
    auth_key = private_key("ES256", "fapi-auth")
    agent = make_pkjwt_fapi_agent(make_agent, {"auth": auth_key}, request_alg="ES256")
    response = post_form(
        BC_AUTHORIZE,
        {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion(agent.client_id, auth_key, "auth", alg="ES256"),
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "1234",
        },
    )
    assert_refused(response, "signed request")


@pytest.mark.parametrize("registered", ["", "RS256"])
def test_an_rs256_client_assertion_from_a_fapi_client_is_invalid_client(make_agent, approver, registered):
    # Conformance: fapi-ciba-id1-ensure-client-assertion-signature-algorithm-in-...-is-RS256-fails
    request_key, auth_key = private_key("PS256", "fapi-request"), private_key("RS256", "fapi-auth")
    agent = make_pkjwt_fapi_agent(
        make_agent, {"request": request_key, "auth": auth_key}, token_endpoint_auth_signing_alg=registered
    )
    fapi = SigningAgent(agent=agent, alg="PS256", key=request_key, kid="request")
    response = post_form(
        BC_AUTHORIZE,
        {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion(agent.client_id, auth_key, "auth", alg="RS256"),
            "request": fapi.sign(fapi.claims(binding_message="1234")),
        },
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert "RS256" in response.json()["error_description"]


@pytest.mark.parametrize("endpoint", [BC_AUTHORIZE, "/oauth/token/"])
def test_a_fapi_client_without_a_client_assertion_is_invalid_client(make_agent, approver, endpoint):
    # Conformance: ...-ensure-without-client-assertion-in-{backchannel-authorization,token}-endpoint-fails
    request_key = private_key("PS256", "fapi-request")
    agent = make_pkjwt_fapi_agent(make_agent, {"request": request_key})
    fapi = SigningAgent(agent=agent, alg="PS256", key=request_key, kid="request")
    form = {"client_id": agent.client_id}
    if endpoint == BC_AUTHORIZE:
        form["request"] = fapi.sign(fapi.claims(binding_message="1234"))
    else:
        form.update(grant_type=CIBA, auth_req_id=factories.make_approval_request(approver, agent).auth_req_id)
    response = post_form(endpoint, form)
    assert_oauth_error(response, 401, "invalid_client")
