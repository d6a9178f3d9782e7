"""private_key_jwt client authentication (RFC 7523 §2.2, OIDC Core §9, CIBA Core §7.1) at the backchannel endpoint,
the token endpoint (CIBA poll, refresh), introspection and revocation, over HTTP with keys made by cryptography."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.test import Client
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from approvals.models import ApprovalRequest
from authz.clients.auth import JWT_BEARER
from tests import factories
from tests.conftest import CIBA, FORM
from tests.fakes.jwks_server import FakeJwksServer

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

ISSUER = "http://testserver"
TOKEN_URL = f"{ISSUER}/oauth/token/"
BC_URL = f"{ISSUER}/oauth/bc-authorize/"
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
_KEYS: dict[tuple[str, str], Any] = {}


def private_key(alg: str, name: str = "a") -> Any:
    """One key per algorithm family and name for the whole module (RSA key generation is slow)."""
    family = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}[alg]
    if (family, name) not in _KEYS:
        if family == "RSA":
            _KEYS[family, name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif family == "EC":
            _KEYS[family, name] = ec.generate_private_key(ec.SECP256R1())
        else:
            _KEYS[family, name] = ed25519.Ed25519PrivateKey.generate()
    return _KEYS[family, name]


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


@dataclass
class Signer:
    """An agent holding a private key, registered with the public half, signing one assertion per request."""

    client_id: str
    alg: str
    key: Any
    kid: str | None
    http: Client = field(default_factory=Client)

    def assertion(
        self,
        *,
        aud: Any = TOKEN_URL,
        exp_in: float | None = 60,
        jti: str | None = "",
        drop: tuple[str, ...] = (),
        key: Any = None,
        kid: Any = "",
        **claims: Any,
    ) -> str:
        now = time.time()
        payload: dict[str, Any] = {"iss": self.client_id, "sub": self.client_id, "aud": aud, "iat": int(now)}
        if exp_in is not None:
            payload["exp"] = int(now + exp_in)
        payload["jti"] = jti if jti != "" else uuid.uuid4().hex
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        kid_value = self.kid if kid == "" else kid
        headers = {"kid": kid_value} if kid_value is not None else None
        return jwt.encode(payload, key or self.key, algorithm=self.alg, headers=headers)

    def params(self, assertion: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion if assertion is not None else self.assertion(),
            **extra,
        }

    def post(self, path: str, params: dict[str, str], **extra: Any):
        return self.http.post(path, urlencode(params), content_type=FORM, **extra)

    def bc_authorize(self, assertion: str | None = None, **params: str):
        body = {"scope": "openid", "login_hint": "alice", **params}
        return self.post("/oauth/bc-authorize/", self.params(assertion, **body))

    def poll(self, auth_req_id: str, assertion: str | None = None):
        return self.post("/oauth/token/", self.params(assertion, grant_type=CIBA, auth_req_id=auth_req_id))


def make_signer(alg: str = "ES256", *, kid: str | None = "k1", jwks: Any = None, **ciba_fields: Any) -> Signer:
    key = private_key(alg)
    fields = {"token_endpoint_auth_method": "private_key_jwt", **ciba_fields}
    if "jwks_uri" not in fields:
        fields["jwks"] = jwks or {"keys": [public_jwk(key, kid or "k1") if kid else _no_kid(public_jwk(key, "x"))]}
    application, _secret = factories.make_agent_client(name=f"Signer {alg}", **fields)
    return Signer(application.client_id, alg, key, kid)


def _no_kid(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "kid"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: Any, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature)])


def refused(response: Any, *words: str) -> str:
    body = factories.assert_oauth_error(response, 401, "invalid_client")
    for word in words:
        assert word in body["error_description"], body
    return body["error_description"]


@pytest.fixture
def alice(approver):
    return approver


# --- each algorithm, each audience, both endpoints --------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_authenticates_at_both_endpoints(alice, alg):
    signer = make_signer(alg)
    ack = signer.bc_authorize()
    assert ack.status_code == 200, ack.content
    pending = signer.poll(ack.json()["auth_req_id"])
    factories.assert_oauth_error(pending, 400, "authorization_pending")


@pytest.mark.parametrize(
    "aud",
    [ISSUER, TOKEN_URL, BC_URL, TOKEN_URL.rstrip("/"), BC_URL.rstrip("/"), ["https://elsewhere.example", BC_URL]],
    ids=["issuer", "token", "bc", "token-no-slash", "bc-no-slash", "array"],
)
def test_each_audience_of_ciba_core_7_1_is_accepted_at_both_endpoints(alice, aud):
    signer = make_signer()
    ack = signer.bc_authorize(signer.assertion(aud=aud))
    assert ack.status_code == 200, ack.content
    pending = signer.poll(ack.json()["auth_req_id"], signer.assertion(aud=aud))
    factories.assert_oauth_error(pending, 400, "authorization_pending")


@pytest.mark.parametrize("aud", ["https://elsewhere.example/oauth/token/", ["https://a.example"], f"{ISSUER}/oauth/x"])
def test_a_foreign_audience_is_refused(alice, aud):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(aud=aud)), "aud", TOKEN_URL)


def test_signing_algorithm_is_limited_to_the_registered_one(alice):
    key = private_key("RS256")
    signer = make_signer("RS256", token_endpoint_auth_signing_alg="PS256")
    refused(signer.bc_authorize(), "RS256", "PS256")
    signer.alg = "PS256"
    assert signer.bc_authorize(signer.assertion(key=key)).status_code == 200


# --- claims -----------------------------------------------------------------------------------------------------------


def test_iss_and_sub_must_both_be_the_client_id(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(sub="someone-else")), "iss and sub")
    refused(signer.bc_authorize(signer.assertion(iss="someone-else")), "iss and sub")


def test_client_id_in_the_body_must_match_the_assertion(alice):
    signer = make_signer()
    refused(signer.bc_authorize(client_id="another-client"), "client_id")
    assert signer.bc_authorize(client_id=signer.client_id).status_code == 200


def test_missing_exp_is_refused(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(exp_in=None)), "exp")


def test_an_exp_more_than_five_minutes_ahead_is_refused(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(exp_in=3600)), "exp", "300 seconds")
    assert signer.bc_authorize(signer.assertion(exp_in=290)).status_code == 200


def test_an_expired_assertion_is_refused(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(exp_in=-120)), "expired")


def test_an_iat_far_in_the_future_is_refused(alice):
    signer = make_signer()
    description = refused(signer.bc_authorize(signer.assertion(iat=int(time.time()) + 3600, exp_in=120)))
    assert "iat" in description or "not valid yet" in description


def test_non_numeric_time_claims_are_refused_not_crashed(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(exp_in=None, exp=str(int(time.time()) + 60))))
    refused(signer.bc_authorize(signer.assertion(iat="yesterday")))


def test_missing_jti_is_refused(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(drop=("jti",))), "jti")


def test_a_jti_is_accepted_once(alice):
    signer = make_signer()
    assertion = signer.assertion()
    assert signer.bc_authorize(assertion).status_code == 200
    refused(signer.bc_authorize(assertion), "already used")
    # The token endpoint shares the record: an assertion used at one endpoint is spent at both.
    ack = signer.bc_authorize()
    refused(signer.poll(ack.json()["auth_req_id"], assertion), "already used")
    assert signer.bc_authorize().status_code == 200


def test_a_refused_signature_does_not_spend_the_jti(alice):
    signer = make_signer()
    other = private_key("ES256", "other")
    refused(signer.bc_authorize(signer.assertion(jti="j-1", key=other)), "signature")
    assert signer.bc_authorize(signer.assertion(jti="j-1")).status_code == 200


# --- keys -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_key_that_is_not_registered_is_refused(alice, alg):
    signer = make_signer(alg)
    refused(signer.bc_authorize(signer.assertion(key=private_key(alg, "intruder"))), "signature")


def test_an_unknown_kid_is_refused(alice):
    signer = make_signer()
    refused(signer.bc_authorize(signer.assertion(kid="nope")), "kid")


def test_a_single_key_needs_no_kid(alice):
    signer = make_signer(kid=None)
    assert signer.bc_authorize().status_code == 200


def test_alg_none_is_refused(alice):
    signer = make_signer()
    now = int(time.time())
    claims = {"iss": signer.client_id, "sub": signer.client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "n"}
    refused(signer.bc_authorize(unsigned({"alg": "none", "typ": "JWT"}, claims)), "none")


def test_hs256_signed_with_the_public_key_as_secret_is_refused(alice):
    # Algorithm confusion: the public key is known to everyone, so an HMAC keyed with it proves nothing.
    signer = make_signer("RS256")
    pem = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"iss": signer.client_id, "sub": signer.client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "h"}
    header, payload, _ = unsigned({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims).split(".")
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    refused(signer.bc_authorize(f"{header}.{payload}.{_b64(mac)}"), "HS256")


@pytest.mark.parametrize(
    "assertion",
    [
        "x",
        "a.b.c",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
        unsigned({"alg": "ES256"}, ["not", "an", "object"]),
        unsigned({"alg": ["ES256"]}, {"iss": "a", "sub": "a"}),
        unsigned({"alg": "ES256", "kid": 7}, {"iss": "a", "sub": "a"}),
        unsigned({"alg": "ES256"}, {"iss": {"x": 1}, "sub": {"x": 1}}),
        "€" * 50,
        "a" * 17000,
    ],
    ids=[
        "word",
        "dots",
        "empty-parts",
        "payload-not-json",
        "array",
        "alg-list",
        "kid-int",
        "iss-object",
        "utf8",
        "huge",
    ],
)
def test_garbage_assertions_are_invalid_client_never_500(alice, assertion):
    response = Signer("whoever", "ES256", private_key("ES256"), None).bc_authorize(assertion)
    refused(response)


def test_garbage_with_a_real_client_id_is_invalid_client(alice):
    signer = make_signer()
    for header in ({"alg": "ES256", "kid": 7}, {"alg": ["ES256"]}, {"alg": "ES256", "kid": "k1"}):
        claims = {"iss": signer.client_id, "sub": signer.client_id, "exp": "soon", "aud": 5, "jti": 1}
        refused(signer.bc_authorize(unsigned(header, claims, b"\x00" * 64)))
        refused(signer.poll("any", unsigned(header, claims, b"\x00" * 64)))


# --- jwks_uri ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def jwks_server():
    with FakeJwksServer() as server:
        yield server


def test_keys_from_jwks_uri_are_fetched_once_and_cached(alice, jwks_server):
    key = private_key("ES256")
    jwks_server.serve({"keys": [public_jwk(key, "k1")]})
    signer = make_signer(jwks_uri=jwks_server.url)
    for _ in range(3):
        assert signer.bc_authorize().status_code == 200
    assert jwks_server.fetches == ["/jwks"]


def test_kid_rotation_is_fetched_again_without_a_refetch_storm(alice, jwks_server):
    old, new = private_key("ES256", "old"), private_key("ES256", "new")
    jwks_server.serve({"keys": [public_jwk(old, "2025")]})
    signer = make_signer(jwks_uri=jwks_server.url, kid="2025")
    signer.key = old
    assert signer.bc_authorize().status_code == 200
    assert len(jwks_server.fetches) == 1

    # The client rotates: its jwks_uri now serves the new key, and its assertions name the new kid.
    jwks_server.serve({"keys": [public_jwk(old, "2025"), public_jwk(new, "2026")]})
    signer.key, signer.kid = new, "2026"
    assert signer.bc_authorize().status_code == 200
    assert len(jwks_server.fetches) == 2

    # Unknown kids (an attacker, or a client's bug) cannot make us fetch again and again.
    for n in range(5):
        refused(signer.bc_authorize(signer.assertion(kid=f"unknown-{n}")), "kid")
    assert len(jwks_server.fetches) == 2
    assert signer.bc_authorize().status_code == 200


@pytest.mark.parametrize(("mode", "reason"), [("server_error", "500"), ("not_json", "JSON")])
def test_an_unreachable_jwks_uri_is_invalid_client_with_the_reason(alice, jwks_server, mode, reason):
    signer = make_signer(jwks_uri=jwks_server.url)
    jwks_server.respond_with(mode)
    refused(signer.bc_authorize(), "jwks_uri", reason)


# --- methods ----------------------------------------------------------------------------------------------------------


def test_a_private_key_jwt_client_presenting_a_secret_is_told_its_method(alice):
    application, secret = factories.make_agent_client(
        token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(private_key("ES256"), "k1")]}
    )
    raw = base64.b64encode(f"{application.client_id}:{secret}".encode()).decode()
    response = Client().post(
        "/oauth/bc-authorize/",
        urlencode({"scope": "openid", "login_hint": "alice"}),
        content_type=FORM,
        HTTP_AUTHORIZATION=f"Basic {raw}",
    )
    refused(response, "registered for private_key_jwt")
    post = Client().post(
        "/oauth/token/",
        urlencode(
            {"grant_type": CIBA, "auth_req_id": "x", "client_id": application.client_id, "client_secret": secret}
        ),
        content_type=FORM,
    )
    refused(post, "registered for private_key_jwt")


def test_a_secret_client_presenting_an_assertion_is_told_its_method(alice, agent):
    signer = Signer(agent.client_id, "ES256", private_key("ES256"), "k1")
    refused(signer.bc_authorize(), "registered for client_secret_basic")
    refused(signer.poll("x"), "registered for client_secret_basic")


def test_an_unknown_client_gives_no_hint(alice):
    signer = Signer("no-such-client", "ES256", private_key("ES256"), "k1")
    assert refused(signer.bc_authorize()) == "Client authentication failed."
    assert refused(signer.poll("x")) == "Client authentication failed."


@pytest.mark.parametrize("path", ["/oauth/bc-authorize/", "/oauth/token/"])
def test_two_methods_at_once_are_invalid_request(alice, agent, path):
    signer = make_signer()
    both = signer.params(client_secret=agent.client_secret, grant_type=CIBA, auth_req_id="x", login_hint="alice")
    factories.assert_oauth_error(signer.post(path, both), 400, "invalid_request")
    with_basic = signer.post(path, signer.params(grant_type=CIBA, auth_req_id="x"), **agent.basic())
    factories.assert_oauth_error(with_basic, 400, "invalid_request")


@pytest.mark.parametrize(
    "params",
    [
        {"client_assertion_type": JWT_BEARER},
        {"client_assertion": "a.b.c"},
    ],
)
def test_half_an_assertion_is_invalid_request(alice, params):
    response = Client().post("/oauth/bc-authorize/", urlencode({**params, "login_hint": "alice"}), content_type=FORM)
    factories.assert_oauth_error(response, 400, "invalid_request")


def test_an_unknown_assertion_type_is_invalid_client(alice):
    signer = make_signer()
    params = {**signer.params(), "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}
    refused(signer.post("/oauth/bc-authorize/", {**params, "login_hint": "alice"}), JWT_BEARER)


# --- whole flows ------------------------------------------------------------------------------------------------------


def test_full_ciba_poll_flow_and_refresh_with_private_key_jwt(alice):
    signer = make_signer("PS256")
    ack = signer.bc_authorize(scope="openid profile")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]

    first = signer.assertion()
    factories.assert_oauth_error(signer.poll(auth_req_id, first), 400, "authorization_pending")
    # Pending, and Redis knows it: still the assertion is checked on each poll, never answered from the mirror.
    refused(signer.poll(auth_req_id, first), "already used")
    factories.assert_oauth_error(signer.poll(auth_req_id), 400, "slow_down")

    factories.decide(auth_req_id)
    tokens = signer.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.content
    body = tokens.json()
    assert body["access_token"] and body["id_token"] and body["refresh_token"]
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.CONSUMED
    factories.assert_oauth_error(signer.poll(auth_req_id), 400, "invalid_grant")

    refresh = signer.params(grant_type="refresh_token", refresh_token=body["refresh_token"])
    refreshed = signer.post("/oauth/token/", refresh)
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["access_token"] != body["access_token"]
    # The same assertion again is a replay, whatever the grant.
    replay = signer.post(
        "/oauth/token/", signer.params(refresh["client_assertion"], grant_type="refresh_token", refresh_token="x")
    )
    refused(replay, "already used")

    access_token = refreshed.json()["access_token"]
    introspection = signer.post("/oauth/introspect/", signer.params(token=access_token))
    assert introspection.status_code == 200, introspection.content
    assert introspection.json()["active"] is True
    assert introspection.json()["client_id"] == signer.client_id
    aimed_at_introspection = signer.assertion(aud=f"{ISSUER}/oauth/introspect/")
    revoked = signer.post("/oauth/revoke/", signer.params(signer.assertion(), token=access_token))
    assert revoked.status_code == 200, revoked.content
    after = signer.post("/oauth/introspect/", signer.params(aimed_at_introspection, token=access_token))
    assert after.status_code == 200 and after.json() == {"active": False}


def test_a_secret_clients_fast_path_is_unchanged(alice, agent):
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    auth_req_id = ack.json()["auth_req_id"]
    factories.assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    factories.assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")


def test_discovery_lists_private_key_jwt_and_its_algorithms(client):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        data = client.get(path).json()
        assert "private_key_jwt" in data["token_endpoint_auth_methods_supported"]
        assert set(data["token_endpoint_auth_signing_alg_values_supported"]) == set(ALGORITHMS)
        assert "none" not in data["token_endpoint_auth_signing_alg_values_supported"]
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert "private_key_jwt" in metadata["introspection_endpoint_auth_methods_supported"]
    assert set(metadata["introspection_endpoint_auth_signing_alg_values_supported"]) == set(ALGORITHMS)
