"""Signed authentication requests at POST /oauth/bc-authorize/ (CIBA Core §7.1.1): the `request` JWT's claims are
the request, checked for signature, algorithm, aud, iss, time claims and a single-use jti; every refusal is
invalid_request, never a 500."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.conf import settings

from approvals.models import ApprovalRequest
from authz.clients.keys import SUPPORTED_ALGS
from authz.clients.request_objects import authentication_request_params
from authz.models import AuthorizationDetailType
from tests import factories
from tests.conftest import FORM, Agent
from tests.factories import assert_oauth_error
from tests.fakes.jwks_server import FakeJwksServer

pytestmark = pytest.mark.django_db

BC_AUTHORIZE = "/oauth/bc-authorize/"
ISSUER = "http://testserver"
MISSING = object()


def new_private_key(alg: str) -> Any:
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


# Key generation is the slow part of these tests (RSA); one key per algorithm family and role is enough.
_KEYS: dict[tuple[str, str], Any] = {}


def private_key(alg: str, role: str = "client") -> Any:
    family = {"PS256": "RS256"}.get(alg, alg)
    if (family, role) not in _KEYS:
        _KEYS[family, role] = new_private_key(family)
    return _KEYS[family, role]


def public_jwk(key: Any, *, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


@dataclass
class SigningAgent:
    """An agent that registered a request signing algorithm and holds the matching private key."""

    agent: Agent
    alg: str
    key: Any
    kid: str

    @property
    def client_id(self) -> str:
        return self.agent.client_id

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "aud": ISSUER,
            "exp": now + 300,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "W4SCT",
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not MISSING}

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, key: Any = None, kid: Any = MISSING) -> str:
        headers = {"kid": self.kid if kid is MISSING else kid}
        if headers["kid"] is None:
            del headers["kid"]
        return jwt.encode(claims, key or self.key, algorithm=alg or self.alg, headers=headers)

    def send(self, token: str, **outside: str):
        return self.agent.post(BC_AUTHORIZE, {"request": token, **outside})

    def send_claims(self, **overrides: Any):
        return self.send(self.sign(self.claims(**overrides)))


def make_signing_agent(make_agent, alg: str, *, name: str = "Signing agent", role: str = "client", **fields: Any):
    key = private_key(alg, role)
    kid = f"{role}-{alg.lower()}"
    agent = make_agent(
        name=name,
        jwks={"keys": [public_jwk(key, kid=kid)]},
        backchannel_authentication_request_signing_alg=alg,
        **fields,
    )
    return SigningAgent(agent=agent, alg=alg, key=key, kid=kid)


def unsigned_jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def assert_refused(response, *words: str) -> str:
    body = assert_oauth_error(response, 400, "invalid_request")
    description = body["error_description"]
    for word in words:
        assert word in description, description
    assert not ApprovalRequest.objects.exists()
    return description


@pytest.fixture
def signer(make_agent, approver) -> SigningAgent:
    return make_signing_agent(make_agent, "PS256")


# --- success ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_signed_request_creates_the_request_with_the_claims_values(make_agent, approver, alg):
    signer = make_signing_agent(make_agent, alg)

    response = signer.send_claims(scope="openid profile", binding_message="Pay 42 EUR", acr_values="urn:x:mfa")

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    approval_request = ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])
    assert approval_request.client == signer.agent.application
    assert approval_request.user == approver.user
    assert approval_request.scope == "openid profile"
    assert approval_request.binding_message == "Pay 42 EUR"
    assert approval_request.hint_type == ApprovalRequest.HintType.LOGIN_HINT


@pytest.mark.parametrize("requested_expiry", [120, "120"], ids=["number", "string"])
def test_requested_expiry_may_be_a_json_number_or_a_string(signer, requested_expiry):
    # CIBA Core §7.1.1; conformance test fapi-ciba-id1-ensure-requested-expiry-as-string-succeeds.
    response = signer.send_claims(requested_expiry=requested_expiry)

    assert response.status_code == 200, response.content
    assert response.json()["expires_in"] == 120


def test_aud_may_be_an_array_containing_the_issuer(signer):
    response = signer.send_claims(aud=["https://other.example", ISSUER])
    assert response.status_code == 200, response.content


def test_client_secret_post_credentials_may_sit_beside_the_request(make_agent, approver):
    signer = make_signing_agent(make_agent, "ES256", token_endpoint_auth_method="client_secret_post")
    token = signer.sign(signer.claims())
    body = urlencode({"client_id": signer.client_id, "client_secret": signer.agent.client_secret, "request": token})
    response = signer.agent.http.post(BC_AUTHORIZE, body, content_type=FORM)
    assert response.status_code == 200, response.content


def test_a_matching_client_id_claim_is_accepted(signer):
    response = signer.send_claims(client_id=signer.client_id)
    assert response.status_code == 200, response.content


def test_signed_request_runs_the_whole_flow(signer, approver):
    ack = signer.send_claims(scope="openid")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    factories.decide(auth_req_id)

    tokens = signer.agent.poll(auth_req_id)

    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["access_token"] and tokens.json()["id_token"]


def test_claims_become_parameters_without_the_jwt_claims(signer):
    details = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "42.00"}}]
    token = signer.sign(signer.claims(requested_expiry=60, authorization_details=details, user_code="1234"))

    params = authentication_request_params({"request": token}, ciba=signer.agent.application.ciba, issuer=ISSUER)

    assert params == {
        "scope": "openid",
        "login_hint": "alice",
        "binding_message": "W4SCT",
        "requested_expiry": "60",
        "authorization_details": details,
        "user_code": "1234",
    }


def test_an_unsigned_client_keeps_sending_form_parameters(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice")
    assert response.status_code == 200, response.content


# --- the JWT's own claims (conformance suite request-object negatives) ------------------------------------------------

NOW = "now"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        pytest.param({"aud": MISSING}, ["lacks the aud claim"], id="missing-aud"),
        pytest.param({"aud": "https://evil.example"}, ["aud must be"], id="bad-aud"),
        pytest.param({"aud": ["https://evil.example"]}, ["aud must be"], id="bad-aud-array"),
        pytest.param({"iss": MISSING}, ["lacks the iss claim"], id="missing-iss"),
        pytest.param({"iss": "someone-else"}, ["iss must be the client_id"], id="bad-iss"),
        pytest.param({"exp": MISSING}, ["lacks the exp claim"], id="missing-exp"),
        pytest.param({"exp": -60, "nbf": -600, "iat": -600}, ["has expired"], id="expired-exp"),
        pytest.param({"exp": 70 * 60}, ["at most 60 minutes after its nbf"], id="exp-70-minutes-ahead"),
        pytest.param({"iat": MISSING}, ["lacks the iat claim"], id="missing-iat"),
        pytest.param({"nbf": MISSING}, ["lacks the nbf claim"], id="missing-nbf"),
        pytest.param({"jti": MISSING}, ["lacks the jti claim"], id="missing-jti"),
        pytest.param({"nbf": 10 * 60}, ["not valid yet"], id="nbf-10-minutes-ahead"),
        pytest.param({"nbf": -70 * 60, "iat": -70 * 60}, ["nbf is more than 60 minutes in the past"], id="nbf-70-past"),
        pytest.param({"iat": 10 * 60}, ["not valid yet"], id="iat-in-the-future"),
        pytest.param({"exp": "in an hour"}, ["exp"], id="exp-not-a-number"),
        pytest.param({"iat": NOW}, ["iat must be a number"], id="iat-a-numeric-string"),
        pytest.param({"jti": ""}, ["jti"], id="empty-jti"),
        pytest.param({"jti": 42}, ["JWT ID must be a string"], id="numeric-jti"),
    ],
)
def test_request_object_claim_negatives_are_invalid_request(signer, overrides, words):
    now = int(time.time())
    relative = {}
    for name, value in overrides.items():
        if name in ("exp", "iat", "nbf") and isinstance(value, int):
            value = now + value
        elif value == NOW:
            value = str(now)
        relative[name] = value

    assert_refused(signer.send_claims(**relative), *words)


# --- algorithms and keys ----------------------------------------------------------------------------------------------


def test_alg_none_is_invalid_request(signer):
    assert_refused(signer.send(unsigned_jwt(signer.claims())), "none")


def test_another_alg_than_the_registered_one_is_invalid_request(signer):
    # The client registered PS256; the same RSA key signing RS256 is still refused.
    token = signer.sign(signer.claims(), alg="RS256")
    assert_refused(signer.send(token), "RS256", "PS256")


def test_hmac_with_the_client_secret_is_invalid_request(signer):
    token = jwt.encode(signer.claims(), signer.agent.client_secret, algorithm="HS256")
    assert_refused(signer.send(token), "HS256")


@pytest.mark.parametrize("kid", ["victim", "attacker", None], ids=["forged-kid", "own-kid", "no-kid"])
def test_a_request_signed_with_another_clients_key_is_invalid_request(make_agent, approver, kid):
    victim = make_signing_agent(make_agent, "ES256", name="Victim", role="victim")
    attacker = make_signing_agent(make_agent, "ES256", name="Attacker", role="attacker")
    header_kid = {"victim": victim.kid, "attacker": attacker.kid, None: None}[kid]
    # The attacker forges a request for the victim's client, signed with the attacker's own registered key.
    token = victim.sign(victim.claims(), key=attacker.key, kid=header_kid)

    description = assert_refused(victim.send(token))
    assert "signature does not verify" in description or "No registered key has kid" in description


def test_an_unsigned_request_from_a_client_with_a_registered_alg_is_invalid_request(signer):
    response = signer.agent.bc_authorize(scope="openid", login_hint="alice")
    assert_refused(response, "signed request")


def test_a_signed_request_from_a_client_without_a_registered_alg_is_invalid_request(make_agent, approver):
    key = private_key("ES256")
    agent = make_agent(name="Plain", jwks={"keys": [public_jwk(key, kid="k1")]})
    now = int(time.time())
    claims = {"iss": agent.client_id, "aud": ISSUER, "exp": now + 300, "iat": now, "nbf": now, "jti": "j1"}
    token = jwt.encode({**claims, "scope": "openid", "login_hint": "alice"}, key, algorithm="ES256")

    assert_refused(agent.post(BC_AUTHORIZE, {"request": token}), "has not registered")


def test_a_client_with_a_registered_alg_but_no_keys_is_refused(make_agent, approver):
    agent = make_agent(name="Keyless", backchannel_authentication_request_signing_alg="ES256")
    signer = SigningAgent(agent=agent, alg="ES256", key=private_key("ES256"), kid="k1")
    assert_refused(signer.send_claims(), "no keys")


@pytest.mark.parametrize("name", ["scope", "login_hint", "binding_message", "requested_expiry", "unknown"])
def test_authentication_parameters_outside_the_request_object_are_invalid_request(signer, name):
    token = signer.sign(signer.claims())
    assert_refused(signer.send(token, **{name: "openid"}), "outside", name)


@pytest.mark.redis
def test_a_request_objects_jti_is_accepted_once(signer):
    assert "Redis" in settings.CACHES["default"]["BACKEND"]  # the replay store is the real, shared one
    token = signer.sign(signer.claims())

    first = signer.send(token)
    assert first.status_code == 200, first.content
    second = signer.send(token)

    body = assert_oauth_error(second, 400, "invalid_request")
    assert "already used" in body["error_description"]
    assert ApprovalRequest.objects.count() == 1


def test_the_same_jti_from_two_clients_is_two_requests(make_agent, approver):
    one = make_signing_agent(make_agent, "ES256", name="One", role="one")
    two = make_signing_agent(make_agent, "ES256", name="Two", role="two")
    assert one.send_claims(jti="shared").status_code == 200
    assert two.send_claims(jti="shared").status_code == 200


# --- claims that cannot be parameters, and garbage --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        pytest.param({"binding_message": 1234}, ["binding_message must be a string"], id="number-binding-message"),
        pytest.param({"login_hint": ["alice"]}, ["login_hint must be a string"], id="array-hint"),
        pytest.param({"scope": None}, ["scope must be a string"], id="null-scope"),
        pytest.param({"requested_expiry": 1.5}, ["requested_expiry"], id="fractional-expiry"),
        pytest.param({"requested_expiry": True}, ["requested_expiry"], id="boolean-expiry"),
        pytest.param({"authorization_details": {"type": "x"}}, ["authorization_details"], id="object-details"),
        pytest.param({"login_hint": "ali\x00ce"}, ["NUL"], id="nul"),
        pytest.param({"client_id": "someone-else"}, ["client_id"], id="other-client-id"),
        pytest.param({"request": "nested"}, ["another request"], id="nested-request"),
    ],
)
def test_claims_that_cannot_be_parameters_are_invalid_request(signer, overrides, words):
    assert_refused(signer.send_claims(**overrides), *words)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "a.b.c.d.e",
        "....",
        "e30.e30.",
        base64.urlsafe_b64encode(b'["alg"]').decode().rstrip("=") + ".e30.c2ln",
        base64.urlsafe_b64encode(b'{"alg":"PS256","kid":7}').decode().rstrip("=") + ".e30.c2ln",
        base64.urlsafe_b64encode(b'{"alg":"PS256"}').decode().rstrip("=") + ".bm90IGpzb24.c2ln",
        base64.urlsafe_b64encode(b'{"alg":"RSA-OAEP","enc":"A256GCM"}').decode().rstrip("=") + ".a.b.c.d",
    ],
)
def test_garbage_in_the_request_parameter_is_invalid_request(signer, token):
    assert_refused(signer.send(token))


def test_non_finite_time_claims_are_invalid_request(signer):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "PS256", "kid": signer.kid}).encode()).rstrip(b"=")
    claims = signer.claims()
    payload = json.dumps(claims).replace(str(claims["exp"]), "NaN").encode()
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    signing_input = header + b"." + body
    signature = jwt.get_algorithm_by_name("PS256").sign(signing_input, signer.key)
    token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

    assert_refused(signer.send(token))


def test_authorization_details_may_be_a_json_array_claim(signer):
    AuthorizationDetailType.objects.create(
        type="countersign_test_transfer",
        name="Transfer",
        schema={"type": "object", "required": ["amount"], "properties": {"amount": {"type": "string"}}},
    )
    details = [{"type": "countersign_test_transfer", "amount": "42.00"}]

    response = signer.send_claims(authorization_details=details)

    assert response.status_code == 200, response.content
    approval_request = ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])
    assert approval_request.authorization_details == details


def test_keys_registered_by_jwks_uri_verify_a_signed_request(make_agent, approver):
    key = private_key("ES256")
    with FakeJwksServer({"keys": [public_jwk(key, kid="uri-key")]}) as jwks_server:
        agent = make_agent(
            name="Keys by URL", jwks_uri=jwks_server.url, backchannel_authentication_request_signing_alg="ES256"
        )
        signer = SigningAgent(agent=agent, alg="ES256", key=key, kid="uri-key")

        response = signer.send_claims()

        assert response.status_code == 200, response.content
        assert jwks_server.fetches == ["/jwks"]


def test_an_unreachable_jwks_uri_is_invalid_request_not_a_server_error(make_agent, approver):
    key = private_key("ES256")
    with FakeJwksServer({"keys": [public_jwk(key, kid="uri-key")]}) as jwks_server:
        jwks_server.respond_with("server_error")
        agent = make_agent(
            name="Keys by URL", jwks_uri=jwks_server.url, backchannel_authentication_request_signing_alg="ES256"
        )
        signer = SigningAgent(agent=agent, alg="ES256", key=key, kid="uri-key")

        assert_refused(signer.send_claims(), "jwks_uri answered HTTP 500")
