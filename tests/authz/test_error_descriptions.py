"""Every error_description the server puts on the wire stays within RFC 6749 section 5.2's characters
(%x20-21 / %x23-5B / %x5D-7E: printable ASCII without '"' and '\\'), whatever the client sent.

Two halves, because authz.errors.wire_text quietly repairs every OAuthError's description (and server.py every error
oauthlib renders), which would hide a badly written message from any HTTP test:

- each distinct error of bc-authorize, the token endpoint (every grant), registration, introspection, revocation
  and the automated-approval endpoint, over HTTP, many of them with hostile input in the values they quote;
- a scan of the source for the messages themselves: a literal outside the set (a section sign, a double quote, a
  curly quote, a dash) turns the suite red where it is written.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.cache import cache
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from oauth2_provider.views.dynamic_client_registration import _issue_registration_token
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from approvals import services as approval_services
from approvals.models import ApprovalRequest, Approver
from authz.clients.auth import JWT_BEARER
from authz.clients.registration import initial_access_token_create
from authz.errors import OAuthError
from authz.models import AuthorizationDetailType, CibaClient, RequestCallback, TokenDetails
from tests import factories
from tests.authz.ciba.test_bc_authorize import server_id_token
from tests.authz.ciba.test_token_endpoint import expire
from tests.authz.clients.test_private_key_jwt import Signer, _no_kid, make_signer, private_key, public_jwk, unsigned
from tests.authz.clients.test_signed_requests import MISSING, SigningAgent, make_signing_agent, unsigned_jwt
from tests.authz.tokens.test_rar import CALENDAR, PAYMENT, install_example_types, with_
from tests.authz.tokens.test_token_exchange import token_row
from tests.conftest import CIBA, FORM, Agent
from tests.fakes.jwks_server import FakeJwksServer

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

# RFC 6749 section 5.2 (and 4.1.2.1): the characters error_description may use.
ALLOWED = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]*")

# What a hostile client puts into values the server quotes back: a double quote, a backslash, a section sign, a
# Latin letter with an accent, a control character and a right-to-left override (no spaces: it stays one token).
HOSTILE = 'q"b\\s\u00a7e\u00e9\x01\u202e'
# The same without control and format characters, for the checks that refuse those first (RAR, JSON strings); the
# apostrophe makes repr() (jsonschema's way of quoting values) switch to double quotes.
HOSTILE_TEXT = 'it\'s "x" \\ \u00a7\u00e9 \u2014 \u201cy\u201d'

BC = "/oauth/bc-authorize/"
TOKEN = "/oauth/token/"
REGISTER = "/oauth/register/"
INTROSPECT = "/oauth/introspect/"
REVOKE = "/oauth/revoke/"
AUTOMATED = "/approvals/automated/"
ISSUER = "http://testserver"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
BANK = "https://bank.example/payments"
VALID = {"scope": "openid", "login_hint": "alice"}
AUTOMATED_SECRET = "certification-" + "s" * 40
DROP = object()  # a parameter to leave out


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}


def form(path: str, params: dict[str, Any] | list[tuple[str, Any]], **extra: Any) -> HttpResponse:
    """A form-encoded POST with no credentials but those in `params` and `extra`."""
    return Client().post(path, urlencode(params), content_type=FORM, **extra)


def token_checksum(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in {**base, **changes}.items() if value is not DROP}


def ec_jwk(kid: str | None = None, **members: Any) -> dict[str, Any]:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **members}


class World:
    """What the cases need, built on first use: agents, signers, tokens, registrations, fakes."""

    def __init__(self, make_agent: Callable[..., Agent], approver: Approver, settings: Any, stack: ExitStack) -> None:
        self.make_agent = make_agent
        self.approver = approver
        self.settings = settings
        self.stack = stack

    @cached_property
    def agent(self) -> Agent:
        return self.make_agent(name="Travel agent")

    def signer(self, alg: str = "ES256", **fields: Any) -> Signer:
        """A private_key_jwt client (tests/authz/clients/test_private_key_jwt.py)."""
        return make_signer(alg, **fields)

    def request_signer(self, alg: str = "ES256", **fields: Any) -> SigningAgent:
        """A client that signs its authentication requests (tests/authz/clients/test_signed_requests.py)."""
        return make_signing_agent(self.make_agent, alg, **fields)

    def jwks_server(self, jwks: dict[str, Any] | None = None) -> FakeJwksServer:
        return self.stack.enter_context(FakeJwksServer(jwks))

    def pending(self, agent: Agent | None = None, **kwargs: Any) -> ApprovalRequest:
        return factories.make_approval_request(self.approver, agent or self.agent, **kwargs)

    def tokens(
        self, agent: Agent | None = None, *, scope: str = "openid profile", details: Any = None
    ) -> dict[str, Any]:
        """A token response from a real CIBA flow: the request, the approver's decision, the redeeming poll."""
        agent = agent or self.agent
        approval_request = factories.make_approval_request(
            self.approver, agent, scope=scope, authorization_details=details or []
        )
        factories.decide(approval_request.auth_req_id)
        response = agent.poll(approval_request.auth_req_id)
        assert response.status_code == 200, response.content
        return response.json()

    def exchange(
        self, *extra: tuple[str, str], agent: Agent | None = None, subject: str | None = None, **params: str
    ) -> HttpResponse:
        agent = agent or self.agent
        body = [("grant_type", TOKEN_EXCHANGE)]
        if subject is not None:
            body += [("subject_token", subject), ("subject_token_type", ACCESS_TOKEN_TYPE)]
        return agent.post(TOKEN, [*body, *extra, *params.items()])

    @cached_property
    def initial_token(self) -> str:
        return initial_access_token_create(expires_in=3600)

    def register(self, metadata: Any = None, *, raw: bytes | str | None = None, **extra: Any) -> HttpResponse:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.initial_token}", **extra}
        body = raw if raw is not None else json.dumps(metadata)
        content_type = headers.pop("content_type", "application/json")
        return Client().post(REGISTER, body, content_type=content_type, **headers)

    def registered(self, **metadata: Any) -> dict[str, Any]:
        response = self.register(poll_client(**metadata))
        assert response.status_code == 201, response.content
        return response.json()

    def manage(
        self, method: str, registered: dict[str, Any], body: Any = None, token: str | None = None
    ) -> HttpResponse:
        path = registered["registration_client_uri"].removeprefix(ISSUER)
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token or registered['registration_access_token']}"}
        if body is None:
            return Client().generic(method.upper(), path, **headers)
        return Client().generic(method.upper(), path, json.dumps(body), content_type="application/json", **headers)


def poll_client(**overrides: Any) -> dict[str, Any]:
    return merged(
        {
            "client_name": "Expense bot",
            "grant_types": [CIBA, "refresh_token"],
            "backchannel_token_delivery_mode": "poll",
            "scope": "openid profile",
        },
        overrides,
    )


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[World], HttpResponse]
    status: int
    error: str
    # A word of the expected description, which pins the branch the case means to reach; "" for any description,
    # None when the answer has none (oauthlib leaves the optional member out of some of its errors).
    mentions: str | None


CASES: list[Case] = []


def case(id: str, status: int, error: str, mentions: str | None = "") -> Callable:
    def register(send: Callable[[World], HttpResponse]) -> Callable[[World], HttpResponse]:
        CASES.append(Case(id, send, status, error, mentions))
        return send

    return register


def bc(id: str, status: int, error: str, mentions: str | None = "", **params: Any) -> None:
    """A case that is one backchannel authentication request of the agent, VALID changed by `params`."""
    case(id, status, error, mentions)(lambda w: w.agent.post(BC, merged(VALID, params)))


# --- bc-authorize: the transport (authz.views) ------------------------------------------------------------------------


@case("bc-get", 405, "invalid_request", "POST")
def _(w: World) -> HttpResponse:
    return w.agent.http.get(BC, **w.agent.basic())


@case("bc-json-body", 400, "invalid_request", "x-www-form-urlencoded")
def _(w: World) -> HttpResponse:
    return w.agent.http.post(BC, json.dumps(VALID), content_type="application/json", **w.agent.basic())


@case("bc-bad-content-length", 400, "invalid_request", "Content-Length")
def _(w: World) -> HttpResponse:
    return w.agent.http.generic("POST", BC, urlencode(VALID), content_type=FORM, CONTENT_LENGTH="abc")


@case("bc-too-large", 413, "invalid_request", "too large")
def _(w: World) -> HttpResponse:
    return w.agent.post(BC, {**VALID, "padding": "x" * 70_000})


@case("bc-invalid-utf8", 400, "invalid_request", "UTF-8")
def _(w: World) -> HttpResponse:
    body = b"scope=openid&login_hint=alice&binding_message=\xff\xfe"
    return w.agent.http.generic("POST", BC, body, content_type=FORM, **w.agent.basic())


@case("bc-repeated-hostile-name", 400, "invalid_request", "is repeated")
def _(w: World) -> HttpResponse:
    return w.agent.post(BC, [*VALID.items(), (HOSTILE, "1"), (HOSTILE, "2")])


bc("bc-nul", 400, "invalid_request", "NUL", login_hint="ali\x00ce")


@case("bc-query-string", 400, "invalid_request", "query string")
def _(w: World) -> HttpResponse:
    return w.agent.http.post(BC + "?scope=openid", urlencode(VALID), content_type=FORM, **w.agent.basic())


@case("bc-unauthorized-client", 400, "unauthorized_client", "CIBA")
def _(w: World) -> HttpResponse:
    return w.make_agent(name="No CIBA", ciba_enabled=False).post(BC, VALID)


@case("bc-too-many-requests", 403, "access_denied", "Too many requests")
def _(w: World) -> HttpResponse:
    w.settings.APPROVALS = {**w.settings.APPROVALS, "PROMPTS_PER_MINUTE": 1}
    for _attempt in range(3):  # the limit counts per clock minute: two requests may straddle one
        response = w.agent.post(BC, VALID)
        if response.status_code == 403:
            break
    return response


# --- bc-authorize: client authentication (authz.clients.auth, authz.clients.keys) -------------------------------------


@case("auth-two-methods", 400, "invalid_request", "RFC 6749 section 2.3")
def _(w: World) -> HttpResponse:
    return w.agent.post(BC, {**VALID, "client_secret": w.agent.client_secret})


@case("auth-body-client-id-differs-from-basic-hostile", 400, "invalid_request", "Authorization header")
def _(w: World) -> HttpResponse:
    return w.agent.post(BC, {**VALID, "client_id": HOSTILE})


@case("auth-half-an-assertion", 400, "invalid_request", "together")
def _(w: World) -> HttpResponse:
    return form(BC, {**VALID, "client_assertion_type": JWT_BEARER})


@case("auth-assertion-type-hostile", 401, "invalid_client", "client_assertion_type")
def _(w: World) -> HttpResponse:
    return form(BC, {**VALID, "client_assertion_type": HOSTILE, "client_assertion": "a.b.c"})


@case("auth-assertion-too-large", 401, "invalid_client", "too large")
def _(w: World) -> HttpResponse:
    return form(BC, {**VALID, "client_assertion_type": JWT_BEARER, "client_assertion": "a" * 17_000})


@case("auth-assertion-not-a-jwt", 401, "invalid_client", "not a signed JWT")
def _(w: World) -> HttpResponse:
    return form(BC, {**VALID, "client_assertion_type": JWT_BEARER, "client_assertion": HOSTILE})


@case("auth-assertion-iss-not-sub", 401, "invalid_client", "iss and sub")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(sub=HOSTILE))


@case("auth-assertion-client-id-hostile", 401, "invalid_client", "client_id does not match")
def _(w: World) -> HttpResponse:
    return w.signer().bc_authorize(client_id=HOSTILE)


@case("auth-basic-not-base64", 401, "invalid_client", "base64")
def _(w: World) -> HttpResponse:
    return form(BC, VALID, HTTP_AUTHORIZATION="Basic %%%")


@case("auth-basic-without-colon", 401, "invalid_client", "client_id:client_secret")
def _(w: World) -> HttpResponse:
    return form(BC, VALID, HTTP_AUTHORIZATION="Basic " + base64.b64encode(HOSTILE.encode()).decode())


@case("auth-no-credentials", 401, "invalid_client", "required")
def _(w: World) -> HttpResponse:
    return form(BC, VALID)


@case("auth-client-id-too-long", 401, "invalid_client", "Client authentication failed.")
def _(w: World) -> HttpResponse:
    return form(BC, VALID, **basic("x" * 300, "secret"))


@case("auth-unknown-client-hostile", 401, "invalid_client", "Client authentication failed.")
def _(w: World) -> HttpResponse:
    return form(BC, VALID, **basic(HOSTILE, HOSTILE))


@case("auth-public-client", 401, "invalid_client", "Public clients")
def _(w: World) -> HttpResponse:
    application, secret = factories.make_public_client()
    return form(BC, VALID, **basic(application.client_id, secret))


@case("auth-secret-client-sends-assertion", 401, "invalid_client", "not private_key_jwt")
def _(w: World) -> HttpResponse:
    return Signer(w.agent.client_id, "ES256", private_key("ES256"), "k1").bc_authorize()


@case("auth-assertion-client-sends-secret", 401, "invalid_client", "registered for private_key_jwt")
def _(w: World) -> HttpResponse:
    application, secret = factories.make_agent_client(
        token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(private_key("ES256"), "k1")]}
    )
    return form(BC, VALID, **basic(application.client_id, secret))


@case("auth-wrong-secret", 401, "invalid_client", "Client authentication failed.")
def _(w: World) -> HttpResponse:
    return form(BC, VALID, **basic(w.agent.client_id, "wrong"))


@case("auth-wrong-method", 401, "invalid_client", "registered for client_secret_post")
def _(w: World) -> HttpResponse:
    return w.make_agent(name="Post agent", token_endpoint_auth_method="client_secret_post").post(BC, VALID)


@case("auth-assertion-exp-far-ahead", 401, "invalid_client", "300 seconds")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(exp_in=3600))


@case("auth-assertion-iat-in-the-future", 401, "invalid_client", "iat")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(iat=int(time.time()) + 3600, exp_in=120))


@case("auth-assertion-replayed", 401, "invalid_client", "already used")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    assertion = signer.assertion()
    assert signer.bc_authorize(assertion).status_code == 200
    return signer.bc_authorize(assertion)


@case("auth-assertion-jti-too-long", 401, "invalid_client", "jti must be")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(jti="j" * 300))


@case("auth-assertion-replay-store-down", 401, "invalid_client", "replay")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    cache = w.settings.CACHES["default"]
    w.settings.CACHES = {"default": {**cache, "LOCATION": "redis://127.0.0.1:9/0"}}
    return signer.bc_authorize()


@case("auth-assertion-iat-a-string", 401, "invalid_client", "must be numbers")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(iat=str(int(time.time()))))


@case("jose-alg-hostile", 401, "invalid_client", "is signed with")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    claims = {"iss": signer.client_id, "sub": signer.client_id, "aud": ISSUER, "exp": int(time.time()) + 60}
    return signer.bc_authorize(unsigned({"alg": HOSTILE}, {**claims, "jti": "j"}, b"sig"))


@case("jose-kid-not-a-string", 401, "invalid_client", "")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    claims = {"iss": signer.client_id, "sub": signer.client_id, "aud": ISSUER, "exp": int(time.time()) + 60}
    return signer.bc_authorize(unsigned({"alg": "ES256", "kid": 7}, {**claims, "jti": "j"}, b"sig"))


@case("jose-no-keys-registered", 401, "invalid_client", "registered no keys")
def _(w: World) -> HttpResponse:
    application, _secret = factories.make_agent_client(token_endpoint_auth_method="private_key_jwt")
    return Signer(application.client_id, "ES256", private_key("ES256"), "k1").bc_authorize()


@case("jose-jwks-uri-answers-500", 401, "invalid_client", "HTTP 500")
def _(w: World) -> HttpResponse:
    server = w.jwks_server()
    server.respond_with("server_error")
    return w.signer(jwks_uri=server.url).bc_authorize()


@case("jose-jwks-uri-not-json", 401, "invalid_client", "did not return JSON")
def _(w: World) -> HttpResponse:
    server = w.jwks_server()
    server.respond_with("not_json")
    return w.signer(jwks_uri=server.url).bc_authorize()


@case("jose-jwks-uri-unreachable", 401, "invalid_client", "Could not fetch")
def _(w: World) -> HttpResponse:
    return w.signer(jwks_uri="http://127.0.0.1:9/jwks").bc_authorize()


@case("jose-jwks-uri-serves-a-hostile-set", 401, "invalid_client", "used twice")
def _(w: World) -> HttpResponse:
    server = w.jwks_server({"keys": [ec_jwk(HOSTILE), ec_jwk(HOSTILE)]})
    return w.signer(jwks_uri=server.url).bc_authorize()


@case("jose-jwks-uri-answers-too-much", 401, "invalid_client", "larger than")
def _(w: World) -> HttpResponse:
    server = w.jwks_server({"keys": [ec_jwk("k1")], "padding": "x" * 70_000})
    return w.signer(jwks_uri=server.url).bc_authorize()


@case("jose-jwks-uri-never-answers", 401, "invalid_client", "No answer within")
def _(w: World) -> HttpResponse:
    silent = w.stack.enter_context(socket.socket())
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections complete in the backlog; nothing ever reads or answers them
    w.settings.APPROVALS = {**w.settings.APPROVALS, "OUTBOUND_TIMEOUT_SECONDS": 0.2}
    return w.signer(jwks_uri=f"http://127.0.0.1:{silent.getsockname()[1]}/jwks").bc_authorize()


@case("jose-stored-jwks-not-json", 401, "invalid_client", "not JSON")
def _(w: World) -> HttpResponse:
    # A key set stored as a JSON string (the admin's JSON field takes one); registration only ever stores objects.
    signer = w.signer()
    CibaClient.objects.filter(application__client_id=signer.client_id).update(jwks=HOSTILE)
    return signer.bc_authorize()


@case("jose-unknown-kid-hostile", 401, "invalid_client", "No registered key has kid")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(kid=HOSTILE))


@case("jose-kid-names-a-key-of-another-type", 401, "invalid_client", "cannot verify RS256")
def _(w: World) -> HttpResponse:
    signer = w.signer("ES256", kid="k1")
    return Signer(signer.client_id, "RS256", private_key("RS256"), "k1").bc_authorize()


@case("jose-no-key-for-the-alg", 401, "invalid_client", "No registered key can verify")
def _(w: World) -> HttpResponse:
    signer = w.signer("ES256", kid=None)
    return Signer(signer.client_id, "RS256", private_key("RS256"), None).bc_authorize()


@case("jose-several-keys", 401, "invalid_client", "Several registered keys")
def _(w: World) -> HttpResponse:
    key = private_key("ES256")
    signer = w.signer("ES256", kid=None, jwks={"keys": [_no_kid(public_jwk(key, "x")), ec_jwk()]})
    return signer.bc_authorize()


@case("jose-bad-signature", 401, "invalid_client", "signature")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(key=private_key("ES256", "intruder")))


@case("jose-expired", 401, "invalid_client", "expired")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(exp_in=-120))


@case("jose-aud-hostile", 401, "invalid_client", "aud must be")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(aud=HOSTILE))


@case("jose-missing-exp", 401, "invalid_client", "lacks the exp claim")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(exp_in=None))


@case("jose-invalid-jti-type", 401, "invalid_client", "")
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.bc_authorize(signer.assertion(jti=42))


# --- bc-authorize: signed requests (authz.clients.request_objects, authz.clients.keys) --------------------------------


def sign_raw(signer: SigningAgent, payload: str) -> str:
    """A JWS over `payload` exactly as given, signed with the signer's key (PyJWT would serialize a dict itself)."""
    header = json.dumps({"alg": signer.alg, "kid": signer.kid})
    signing_input = ".".join(
        base64.urlsafe_b64encode(part.encode()).rstrip(b"=").decode() for part in (header, payload)
    )
    signature = jwt.get_algorithm_by_name(signer.alg).sign(signing_input.encode(), signer.key)
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def signed(id: str, mentions: str, *, fapi: bool = False, **overrides: Any) -> None:
    """A case that is one signed request whose claims are the defaults changed by `overrides`."""

    def send(w: World) -> HttpResponse:
        signer = w.request_signer(fapi_ciba=fapi)
        now = int(time.time())
        relative = {
            name: now + value if name in ("exp", "iat", "nbf") and type(value) is int else value
            for name, value in overrides.items()
        }
        return signer.send_claims(**relative)

    case(id, 400, "invalid_request", mentions)(send)


@case("ro-unsigned-from-a-signing-client", 400, "invalid_request", "CIBA Core 7.1.1")
def _(w: World) -> HttpResponse:
    return w.request_signer().agent.post(BC, VALID)


signed("ro-fapi-without-binding-message", "FAPI-CIBA", fapi=True, binding_message=MISSING)


@case("ro-parameters-outside-hostile", 400, "invalid_request", "found outside it")
def _(w: World) -> HttpResponse:
    signer = w.request_signer()
    return signer.send(signer.sign(signer.claims()), **{HOSTILE: "openid"})


@case("ro-client-without-a-signing-alg", 400, "invalid_request", "has not registered")
def _(w: World) -> HttpResponse:
    agent = w.make_agent(name="Plain", jwks={"keys": [public_jwk(private_key("ES256"), "k1")]})
    return agent.post(BC, {"request": "a.b.c"})


@case("ro-empty", 400, "invalid_request", "empty")
def _(w: World) -> HttpResponse:
    return w.request_signer().send("")


@case("ro-fapi-alg-hostile", 400, "invalid_request", "PS256 or ES256")
def _(w: World) -> HttpResponse:
    signer = w.request_signer(fapi_ciba=True)
    return signer.send(unsigned_jwt(signer.claims(), {"alg": HOSTILE}))


@case("ro-fapi-not-a-jwt", 400, "invalid_request", "not a signed JWT")
def _(w: World) -> HttpResponse:
    return w.request_signer(fapi_ciba=True).send(HOSTILE)


@case("ro-not-a-jwt", 400, "invalid_request", "not a signed JWT")
def _(w: World) -> HttpResponse:
    return w.request_signer().send(HOSTILE)


@case("ro-alg-hostile", 400, "invalid_request", "is signed with")
def _(w: World) -> HttpResponse:
    signer = w.request_signer()
    return signer.send(unsigned_jwt(signer.claims(), {"alg": HOSTILE}))


@case("ro-payload-not-json", 400, "invalid_request", "not valid")
def _(w: World) -> HttpResponse:
    signer = w.request_signer()
    return signer.send(sign_raw(signer, HOSTILE))


signed("ro-missing-aud", "lacks the aud claim", aud=MISSING)
signed("ro-aud-hostile", "aud must be", aud=HOSTILE)
signed("ro-iss-hostile", "iss must be the client_id", iss=HOSTILE)
signed("ro-expired", "has expired", exp=-60, nbf=-600, iat=-600)
signed("ro-nbf-in-the-future", "not valid yet", nbf=600)
signed("ro-jti-not-a-string", "", jti=42)
signed("ro-iat-a-string", "must be a number", iat=str(int(time.time())))
signed("ro-nbf-too-old", "more than 60 minutes in the past", nbf=-70 * 60, iat=-70 * 60)
signed("ro-too-long-lived", "at most 60 minutes after its nbf", exp=70 * 60)
signed("ro-jti-too-long", "jti must be", jti="j" * 300)
signed("ro-nul-in-a-claim-name", "Claim names", **{"x\x00": "1"})
signed("ro-nested-request", "another request", request="nested")
signed("ro-client-id-hostile", "client_id", client_id=HOSTILE)
signed("ro-fractional-requested-expiry", "requested_expiry", requested_expiry=1.5)
signed("ro-claim-not-a-string-hostile", "must be a string", **{HOSTILE: 5})
signed("ro-nul-in-a-claim", "NUL", login_hint="ali\x00ce")


@case("ro-replayed", 400, "invalid_request", "already used")
def _(w: World) -> HttpResponse:
    signer = w.request_signer()
    token = signer.sign(signer.claims())
    assert signer.send(token).status_code == 200
    return signer.send(token)


@case("ro-authorization-details-with-nan", 400, "invalid_authorization_details", "not valid JSON")
def _(w: World) -> HttpResponse:
    # JSON has no NaN (RFC 8259 section 6), but Python's parser, which PyJWT uses for the claims, takes one.
    signer = w.request_signer()
    claims = json.dumps(signer.claims(authorization_details=[{"type": "x", "amount": 1.5}]))
    return signer.send(sign_raw(signer, claims.replace("1.5", "NaN")))


@case("ro-authorization-details-too-large", 400, "invalid_authorization_details", "larger than")
def _(w: World) -> HttpResponse:
    install_example_types()
    return w.request_signer().send_claims(authorization_details=[{"type": "x" * 9000}])


# --- bc-authorize: the request (authz.ciba.request) -------------------------------------------------------------------

bc("bc-acr-values-too-long", 400, "invalid_request", "acr_values", acr_values="a" * 256)


@case("bc-approver-not-accepting", 403, "access_denied", "not accepting")
def _(w: World) -> HttpResponse:
    Approver.objects.filter(pk=w.approver.pk).update(accepting_requests=False)
    return w.agent.post(BC, VALID)


def ping_agent(w: World) -> Agent:
    return w.make_agent(
        name="Ping agent",
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint="http://127.0.0.1:9/cb",
    )


@case("bc-notification-token-missing", 400, "invalid_request", "client_notification_token is required")
def _(w: World) -> HttpResponse:
    return ping_agent(w).post(BC, VALID)


@case("bc-notification-token-hostile", 400, "invalid_request", "bearer token")
def _(w: World) -> HttpResponse:
    return ping_agent(w).post(BC, {**VALID, "client_notification_token": HOSTILE})


bc("bc-scope-missing", 400, "invalid_request", "scope is required", scope=DROP)
bc("bc-scope-without-openid", 400, "invalid_scope", "CIBA Core 7.1", scope="profile")
bc("bc-scope-unknown-hostile", 400, "invalid_scope", "Unknown scope", scope=f"openid {HOSTILE}")


@case("bc-scope-not-allowed", 400, "invalid_scope", "may not ask for")
def _(w: World) -> HttpResponse:
    return w.make_agent(name="Narrow", allowed_scopes="openid").post(BC, {**VALID, "scope": "openid email"})


bc("bc-two-hints", 400, "invalid_request", "exactly one", login_hint_token="x")
bc("bc-empty-hint", 400, "invalid_request", "is empty", login_hint="")
bc("bc-login-hint-token", 400, "invalid_request", "login_hint_token", login_hint=DROP, login_hint_token="x")
bc("bc-unknown-user-hostile", 400, "unknown_user_id", "user", login_hint=HOSTILE)
bc("bc-id-token-hint-not-a-jwt", 400, "invalid_request", "not a JWT", login_hint=DROP, id_token_hint=HOSTILE)


@case("bc-id-token-hint-from-elsewhere", 400, "invalid_request", "not issued by this server")
def _(w: World) -> HttpResponse:
    foreign = jwt.encode({"sub": "1"}, private_key("RS256", "elsewhere"), algorithm="RS256", headers={"kid": HOSTILE})
    return w.agent.post(BC, {"scope": "openid", "id_token_hint": foreign})


@case("bc-id-token-hint-of-another-client", 400, "invalid_request", "another client")
def _(w: World) -> HttpResponse:
    token = server_id_token(aud="another-client", sub=str(w.approver.user.pk), exp=int(time.time()) + 600)
    return w.agent.post(BC, {"scope": "openid", "id_token_hint": token})


@case("bc-id-token-hint-invalid", 400, "invalid_request", "not a valid ID token")
def _(w: World) -> HttpResponse:
    token = server_id_token(
        aud=w.agent.client_id, sub=str(w.approver.user.pk), exp=int(time.time()) + 600, iss="https://elsewhere"
    )
    return w.agent.post(BC, {"scope": "openid", "id_token_hint": token})


bc("bc-binding-message-empty", 400, "invalid_binding_message", "empty", binding_message=" ")
bc("bc-binding-message-too-long", 400, "invalid_binding_message", "longer than", binding_message="x" * 65)
bc("bc-binding-message-hostile", 400, "invalid_binding_message", "U+", binding_message=HOSTILE)
bc("bc-requested-expiry-hostile", 400, "invalid_request", "requested_expiry", requested_expiry=HOSTILE)
bc("bc-requested-expiry-zero", 400, "invalid_request", "requested_expiry", requested_expiry="0")


def code_agent(w: World) -> Agent:
    factories.make_approver("bob", user_code="4711")
    return w.make_agent(name="Careful agent", backchannel_user_code_parameter=True)


@case("bc-user-code-missing", 400, "missing_user_code", "user_code")
def _(w: World) -> HttpResponse:
    return code_agent(w).post(BC, {"scope": "openid", "login_hint": "bob"})


@case("bc-user-code-wrong-hostile", 400, "invalid_user_code", "user_code")
def _(w: World) -> HttpResponse:
    return code_agent(w).post(BC, {"scope": "openid", "login_hint": "bob", "user_code": HOSTILE})


# --- bc-authorize: authorization_details (authz.tokens.details) -------------------------------------------------------


def rar(id: str, details: Any, mentions: str, agent: dict[str, Any] | None = None) -> None:
    def send(w: World) -> HttpResponse:
        install_example_types()
        sender = w.make_agent(name="RAR agent", **agent) if agent else w.agent
        raw = details if isinstance(details, str) else json.dumps(details)
        return sender.post(BC, {**VALID, "authorization_details": raw})

    case(id, 400, "invalid_authorization_details", mentions)(send)


rar("rar-too-many", [PAYMENT] * 11, "at most")
rar("rar-not-an-object", [HOSTILE], "not a JSON object")
rar("rar-no-type", [{"actions": ["x"]}], "RFC 9396 section 2")
rar("rar-nested-too-deeply", [with_(PAYMENT, creditorAccount=json.loads("[" * 20 + "]" * 20))], "too deeply")
rar("rar-control-character", [with_(PAYMENT, creditorName=HOSTILE)], "U+")
rar("rar-common-field", [with_(PAYMENT, actions=HOSTILE_TEXT)], "array of strings")
rar("rar-identifier", [with_(CALENDAR, identifier=42)], "identifier")
rar("rar-unknown-type-hostile", [{"type": HOSTILE_TEXT}], "unknown type")
rar("rar-type-not-allowed", [CALENDAR], "may not use type", agent={"authorization_details_types": ["x"]})
rar("rar-value-hostile", [with_(PAYMENT, instructedAmount={"currency": HOSTILE_TEXT, "amount": "1.00"})], "currency")
rar("rar-field-hostile", [with_(PAYMENT, **{HOSTILE_TEXT: "x"})], "not a valid payment_initiation")
rar("rar-pattern-with-backslashes", [with_(PAYMENT, creditorName=" ")], "creditorName")
rar("rar-too-large", "[" + " " * 9000 + "]", "larger than")
rar("rar-not-json", HOSTILE_TEXT, "not valid JSON")
rar("rar-not-an-array", json.dumps({"type": HOSTILE_TEXT}), "JSON array")


@case("rar-unusable-schema", 400, "invalid_authorization_details", "cannot be validated")
def _(w: World) -> HttpResponse:
    AuthorizationDetailType.objects.create(type="broken", name="Broken", schema={"$ref": "https://elsewhere/x.json"})
    return w.agent.post(BC, {**VALID, "authorization_details": json.dumps([{"type": "broken"}])})


# --- the token endpoint: before any grant (authz.views) ---------------------------------------------------------------


@case("token-get", 405, "invalid_request", "POST")
def _(w: World) -> HttpResponse:
    return w.agent.http.get(TOKEN, **w.agent.basic())


@case("token-too-large", 413, "invalid_request", "too large")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, {"grant_type": CIBA, "auth_req_id": "x" * (3 * 1024 * 1024)})


@case("token-too-many-fields", 400, "invalid_request", "could not be parsed")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, [("grant_type", CIBA), *((f"f{n}", "x") for n in range(1100))])


@case("token-query-string", 400, "invalid_request", "query")
def _(w: World) -> HttpResponse:
    path = f"{TOKEN}?{urlencode({'x': HOSTILE})}"
    return w.agent.http.post(path, urlencode({"grant_type": "refresh_token", "refresh_token": "x"}), content_type=FORM)


@case("token-unknown-grant-hostile", 400, "unsupported_grant_type", "grant_types_supported")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, {"grant_type": HOSTILE})


@case("token-no-grant-type", 400, "unsupported_grant_type", "grant_types_supported")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, {"refresh_token": "x"})


# --- the token endpoint: the CIBA grant (authz.views, authz.clients.auth) ---------------------------------------------


def poll(w: World, auth_req_id: str, agent: Agent | None = None) -> HttpResponse:
    return (agent or w.agent).post(TOKEN, {"grant_type": CIBA, "auth_req_id": auth_req_id})


@case("ciba-repeated-hostile-name", 400, "invalid_request", "is repeated")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, [("grant_type", CIBA), ("auth_req_id", "x"), (HOSTILE, "1"), (HOSTILE, "2")])


@case("ciba-nul", 400, "invalid_request", "NUL")
def _(w: World) -> HttpResponse:
    return poll(w, "x\x00")


@case("ciba-no-credentials", 401, "invalid_client", "required")
def _(w: World) -> HttpResponse:
    return form(TOKEN, {"grant_type": CIBA, "auth_req_id": HOSTILE})


@case("ciba-repeated-credential", 400, "invalid_request", "client_id is repeated")
def _(w: World) -> HttpResponse:
    return form(TOKEN, [("grant_type", "refresh_token"), ("client_id", "a"), ("client_id", "b")])


@case("ciba-nul-in-a-credential", 400, "invalid_request", "NUL")
def _(w: World) -> HttpResponse:
    return form(TOKEN, [("grant_type", "refresh_token"), ("client_id", "a\x00"), ("client_secret", "b")])


@case("ciba-unauthorized-client", 400, "unauthorized_client", "CIBA")
def _(w: World) -> HttpResponse:
    return poll(w, HOSTILE, w.make_agent(name="No CIBA", ciba_enabled=False))


@case("ciba-auth-req-id-missing", 400, "invalid_request", "auth_req_id is required")
def _(w: World) -> HttpResponse:
    return w.agent.post(TOKEN, {"grant_type": CIBA})


@case("ciba-auth-req-id-unknown-hostile", 400, "invalid_grant", "auth_req_id")
def _(w: World) -> HttpResponse:
    return poll(w, HOSTILE)


@case("ciba-pending", 400, "authorization_pending", "")
def _(w: World) -> HttpResponse:
    return poll(w, w.pending().auth_req_id)


@case("ciba-pending-from-the-database", 400, "authorization_pending", "")
def _(w: World) -> HttpResponse:
    auth_req_id = w.pending().auth_req_id
    cache.clear()  # no Redis mirror: the answer comes from the database path
    return poll(w, auth_req_id)


@case("ciba-slow-down", 400, "slow_down", "")
def _(w: World) -> HttpResponse:
    auth_req_id = w.pending().auth_req_id
    poll(w, auth_req_id)
    return poll(w, auth_req_id)


@case("ciba-expired", 400, "expired_token", "expired")
def _(w: World) -> HttpResponse:
    approval_request = w.pending()
    expire(approval_request)
    return poll(w, approval_request.auth_req_id)


@case("ciba-denied", 400, "access_denied", "denied")
def _(w: World) -> HttpResponse:
    auth_req_id = w.pending().auth_req_id
    factories.decide(auth_req_id, approve=False)
    return poll(w, auth_req_id)


@case("ciba-cancelled", 400, "access_denied", "cancelled")
def _(w: World) -> HttpResponse:
    approval_request = w.pending()
    assert approval_services.approval_request_cancel(approval_request_id=approval_request.pk, actor=None)
    return poll(w, approval_request.auth_req_id)


@case("ciba-already-redeemed", 400, "invalid_grant", "already issued")
def _(w: World) -> HttpResponse:
    auth_req_id = w.pending().auth_req_id
    factories.decide(auth_req_id)
    assert poll(w, auth_req_id).status_code == 200
    return poll(w, auth_req_id)


@case("ciba-push-client-polls", 400, "unauthorized_client", "push mode")
def _(w: World) -> HttpResponse:
    approval_request = w.pending()  # bound to push mode, as bc-authorize binds a push client's request
    RequestCallback.objects.create(request=approval_request, mode="push", endpoint="http://127.0.0.1:9/cb", token="t")
    auth_req_id = approval_request.auth_req_id
    factories.decide(auth_req_id)
    return poll(w, auth_req_id)


@case("ciba-assertion-of-a-secret-client", 401, "invalid_client", "not private_key_jwt")
def _(w: World) -> HttpResponse:
    return Signer(w.agent.client_id, "ES256", private_key("ES256"), "k1").poll(HOSTILE)


# --- the token endpoint: refresh_token (DOT and oauthlib) -------------------------------------------------------------


def refresh(w: World, agent: Agent | None = None, **params: str) -> HttpResponse:
    return (agent or w.agent).post(TOKEN, {"grant_type": "refresh_token", **params})


@case("refresh-missing", 400, "invalid_request", "refresh")
def _(w: World) -> HttpResponse:
    return refresh(w)


@case("refresh-unknown-hostile", 400, "invalid_grant", "refresh token")
def _(w: World) -> HttpResponse:
    return refresh(w, refresh_token=HOSTILE)


@case("refresh-user-inactive", 400, "invalid_grant", "no longer active")
def _(w: World) -> HttpResponse:
    tokens = w.tokens()
    w.approver.user.is_active = False
    w.approver.user.save()
    return refresh(w, refresh_token=tokens["refresh_token"])


@case("refresh-wider-scope-hostile", 400, "invalid_scope", None)
def _(w: World) -> HttpResponse:
    return refresh(w, refresh_token=w.tokens()["refresh_token"], scope=f"openid {HOSTILE}")


@case("refresh-no-credentials", 401, "invalid_client", None)
def _(w: World) -> HttpResponse:
    return form(TOKEN, {"grant_type": "refresh_token", "refresh_token": HOSTILE, "client_id": HOSTILE})


@case("refresh-wrong-secret", 401, "invalid_client", "Client authentication failed.")
def _(w: World) -> HttpResponse:
    return form(TOKEN, {"grant_type": "refresh_token", "refresh_token": "x"}, **basic(w.agent.client_id, "wrong"))


# --- the token endpoint: client_credentials (authz.views, oauthlib) ---------------------------------------------------


def client_credentials(agent: Agent, *extra: tuple[str, str], **params: str) -> HttpResponse:
    return agent.post(TOKEN, [("grant_type", "client_credentials"), *extra, *params.items()])


@case("cc-not-allowed", 400, "unauthorized_client", "client_credentials")
def _(w: World) -> HttpResponse:
    return client_credentials(w.agent, scope="openid")


@case("cc-scope-not-allowed-hostile", 400, "invalid_scope", "may ask only for")
def _(w: World) -> HttpResponse:
    agent = w.make_agent(name="Self", client_credentials_enabled=True, allowed_scopes="introspection")
    return client_credentials(agent, scope=HOSTILE)


@case("cc-unknown-scope-hostile", 400, "invalid_scope", None)
def _(w: World) -> HttpResponse:
    return client_credentials(w.make_agent(name="Plain OAuth client", ciba=False), scope=HOSTILE)


@case("cc-no-credentials", 401, "invalid_client", None)
def _(w: World) -> HttpResponse:
    return form(TOKEN, {"grant_type": "client_credentials", "client_id": HOSTILE})


# --- the token endpoint: token exchange (authz.tokens.exchange) -------------------------------------------------------


def subject(w: World, **kwargs: Any) -> str:
    return w.tokens(**kwargs)["access_token"]


@case("tx-not-allowed", 400, "unauthorized_client", "exchange")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", BANK), agent=w.make_agent(name="Restricted", token_exchange_enabled=False))


@case("tx-no-credentials", 401, "invalid_client", "Client authentication failed.")
def _(w: World) -> HttpResponse:
    return form(TOKEN, {"grant_type": TOKEN_EXCHANGE, "subject_token": HOSTILE, "client_id": w.agent.client_id})


@case("tx-subject-token-missing", 400, "invalid_request", "subject_token is required")
def _(w: World) -> HttpResponse:
    return w.exchange(("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BANK))


@case("tx-subject-token-type-hostile", 400, "invalid_request", "subject_token_type must be")
def _(w: World) -> HttpResponse:
    return w.exchange(("subject_token", "x"), ("subject_token_type", HOSTILE))


@case("tx-requested-token-type-hostile", 400, "invalid_request", "can be requested")
def _(w: World) -> HttpResponse:
    return w.exchange(("requested_token_type", HOSTILE), subject="x")


@case("tx-actor-token-alone", 400, "invalid_request", "go together")
def _(w: World) -> HttpResponse:
    return w.exchange(("actor_token", HOSTILE), subject="x")


@case("tx-actor-token-type-hostile", 400, "invalid_request", "actor_token_type must be")
def _(w: World) -> HttpResponse:
    return w.exchange(("actor_token", "x"), ("actor_token_type", HOSTILE), subject="x")


@case("tx-no-target", 400, "invalid_request", "RFC 8693 section 2.1")
def _(w: World) -> HttpResponse:
    return w.exchange(subject="x")


@case("tx-subject-unknown-hostile", 400, "invalid_grant", "not an active access token")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", BANK), subject=HOSTILE)


@case("tx-subject-of-another-client", 400, "invalid_grant", "not an active access token")
def _(w: World) -> HttpResponse:
    other = subject(w, agent=w.make_agent(name="Other agent"))
    return w.exchange(("resource", BANK), subject=other)


@case("tx-actor-unknown-hostile", 400, "invalid_grant", "actor_token")
def _(w: World) -> HttpResponse:
    actor = [("actor_token", HOSTILE), ("actor_token_type", ACCESS_TOKEN_TYPE)]
    return w.exchange(("resource", BANK), *actor, subject=subject(w))


@case("tx-actor-of-another-client", 400, "invalid_grant", "calling client")
def _(w: World) -> HttpResponse:
    actor = [("actor_token", subject(w, agent=w.make_agent(name="Actor"))), ("actor_token_type", ACCESS_TOKEN_TYPE)]
    return w.exchange(("resource", BANK), *actor, subject=subject(w))


@case("tx-audience-outside-the-subjects", 400, "invalid_target", "requested audience")
def _(w: World) -> HttpResponse:
    other = w.make_agent(name="Other agent")
    addressed = w.exchange(("audience", w.agent.client_id), subject=subject(w)).json()["access_token"]
    return w.exchange(("audience", other.client_id), subject=addressed)


@case("token-resource-not-a-uri-hostile", 400, "invalid_target", "RFC 8707 section 2")
def _(w: World) -> HttpResponse:
    agent = w.make_agent(name="Self", client_credentials_enabled=True)
    return client_credentials(agent, scope="openid", resource="http://[" + HOSTILE)


@case("tx-chain-too-long", 400, "invalid_grant", "too many times")
def _(w: World) -> HttpResponse:
    root, exchanged = subject(w), subject(w)
    act: dict[str, Any] = {"sub": "a"}
    for _hop in range(8):
        act = {"sub": "a", "act": act}
    # As if `exchanged` came from `root` down a chain of eight agents.
    TokenDetails.objects.update_or_create(
        access_token=token_row(exchanged), defaults={"act": act, "subject_token": token_row(root)}
    )
    return w.exchange(("resource", BANK), subject=exchanged)


@case("tx-subject-about-to-expire", 400, "invalid_grant", "about to expire")
def _(w: World) -> HttpResponse:
    token = subject(w)
    w.settings.OAUTH2_PROVIDER = {**w.settings.OAUTH2_PROVIDER, "ACCESS_TOKEN_EXPIRE_SECONDS": 0}
    return w.exchange(("resource", BANK), subject=token)


@case("tx-nul", 400, "invalid_request", "NUL")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", BANK), subject="a\x00b")


@case("tx-parameter-too-long-hostile", 400, "invalid_request", "is too long")
def _(w: World) -> HttpResponse:
    return w.exchange((HOSTILE, "x" * 20_000), subject="x")


@case("tx-parameter-repeated-hostile", 400, "invalid_request", "is repeated")
def _(w: World) -> HttpResponse:
    return w.exchange((HOSTILE, "1"), (HOSTILE, "2"), subject="x")


@case("tx-too-many-targets", 400, "invalid_target", "At most")
def _(w: World) -> HttpResponse:
    return w.exchange(*(("audience", f"{HOSTILE}{n}") for n in range(11)), subject="x")


@case("tx-resource-not-a-uri-hostile", 400, "invalid_target", "absolute http(s) URI")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", HOSTILE), subject=subject(w))


@case("tx-resource-over-http", 400, "invalid_target", "https")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", "http://bank.example/payments"), subject=subject(w))


@case("tx-resource-outside-the-subjects", 400, "invalid_target", "requested resource")
def _(w: World) -> HttpResponse:
    narrowed = w.exchange(("resource", BANK), subject=subject(w)).json()["access_token"]
    return w.exchange(("resource", "https://elsewhere.example/"), subject=narrowed)


@case("tx-audience-unknown-hostile", 400, "invalid_target", "Unknown audience")
def _(w: World) -> HttpResponse:
    return w.exchange(("audience", HOSTILE), subject=subject(w))


@case("tx-scope-wider-hostile", 400, "invalid_scope", "subset")
def _(w: World) -> HttpResponse:
    return w.exchange(("resource", BANK), ("scope", f"openid {HOSTILE}"), subject=subject(w))


@case("tx-scope-not-allowed", 400, "invalid_scope", "may not hold")
def _(w: World) -> HttpResponse:
    token = subject(w, scope="openid profile")
    CibaClient.objects.filter(application=w.agent.application).update(allowed_scopes="openid")
    return w.exchange(("resource", BANK), subject=token)


def tx_details(id: str, raw: str, mentions: str) -> None:
    def send(w: World) -> HttpResponse:
        install_example_types()
        token = subject(w, details=[PAYMENT])
        return w.exchange(("resource", BANK), ("authorization_details", raw), subject=token)

    case(id, 400, "invalid_authorization_details", mentions)(send)


tx_details("tx-details-not-json-hostile", HOSTILE, "JSON array")
tx_details("tx-details-not-objects", json.dumps([HOSTILE]), "objects with a type")
tx_details("tx-details-wider-hostile", json.dumps([{"type": HOSTILE}]), "wider")


@case("tx-details-type-not-allowed", 400, "invalid_authorization_details", "types")
def _(w: World) -> HttpResponse:
    install_example_types()
    token = subject(w, details=[PAYMENT])
    CibaClient.objects.filter(application=w.agent.application).update(authorization_details_types=["calendar_event"])
    return w.exchange(("resource", BANK), subject=token)


# --- registration: POST /oauth/register/ (authz.clients.registration, the models' validation, approvals.outbound) -----


@case("reg-off", 404, "not_found", "not enabled")
def _(w: World) -> HttpResponse:
    w.settings.REGISTRATION_MODE = "off"
    return w.register(poll_client())


@case("reg-get", 405, "invalid_request", "not allowed")
def _(w: World) -> HttpResponse:
    return Client().get(REGISTER)


@case("reg-no-initial-access-token", 401, "invalid_token", "initial access token is required")
def _(w: World) -> HttpResponse:
    return Client().post(REGISTER, json.dumps(poll_client()), content_type="application/json")


@case("reg-not-a-bearer-token", 401, "invalid_token", "RFC 6750 section 2.1")
def _(w: World) -> HttpResponse:
    return w.register(poll_client(), HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"a:b").decode())


@case("reg-unknown-initial-access-token", 401, "invalid_token", "not valid")
def _(w: World) -> HttpResponse:
    return w.register(poll_client(), HTTP_AUTHORIZATION="Bearer nope")


@case("reg-expired-initial-access-token", 401, "invalid_token", "expired")
def _(w: World) -> HttpResponse:
    get_access_token_model().objects.filter(token_checksum=token_checksum(w.initial_token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    return w.register(poll_client())


def reg(id: str, mentions: str, error: str = "invalid_client_metadata", **metadata: Any) -> None:
    """A case that registers poll_client() changed by `metadata`."""
    case(id, 400, error, mentions)(lambda w: w.register(poll_client(**metadata)))


def reg_raw(id: str, raw: bytes | str, mentions: str, **extra: Any) -> None:
    case(id, 400, "invalid_client_metadata", mentions)(lambda w: w.register(raw=raw, **extra))


reg_raw("reg-form-body", urlencode({"client_name": HOSTILE}), "application/json", content_type=FORM)
reg_raw("reg-too-large", json.dumps(poll_client(client_name="x" * 70_000)), "larger than")
reg_raw("reg-not-json", HOSTILE.encode(), "not valid JSON")
reg_raw("reg-not-an-object", json.dumps([HOSTILE]), "JSON object")
reg_raw("reg-nul", json.dumps(poll_client(client_name="a\x00b")), "NUL")

reg("reg-string-expected", "client_name must be a string", client_name=5)
reg("reg-choice-hostile", "token_endpoint_auth_method must be one of", token_endpoint_auth_method=HOSTILE)
reg("reg-array-expected", "grant_types must be an array", grant_types=HOSTILE)
reg("reg-redirect-uris", "redirect_uris", error="invalid_redirect_uri", redirect_uris=[HOSTILE])
reg("reg-grant-type-hostile", "Unsupported grant_types", grant_types=[CIBA, HOSTILE])
reg("reg-without-the-ciba-grant", "CIBA Core 4", grant_types=["refresh_token"])
reg("reg-client-name-empty", "client_name is required", client_name="")
reg("reg-auth-method-none", "confidential", token_endpoint_auth_method="none")
reg("reg-signing-alg-without-private-key-jwt", "private_key_jwt only", token_endpoint_auth_signing_alg="ES256")
reg("reg-delivery-mode-missing", "is required", backchannel_token_delivery_mode=DROP)
reg("reg-delivery-mode-empty", "must be poll, ping or push", backchannel_token_delivery_mode="")
reg(
    "reg-poll-with-an-endpoint",
    "only for ping and push",
    backchannel_client_notification_endpoint="https://agent.example/cb",
)
reg("reg-user-code-not-a-boolean", "true or false", backchannel_user_code_parameter=HOSTILE)
reg("reg-jwks-not-an-object", "JWK Set", jwks=HOSTILE)
reg("reg-id-token-alg-hostile", "RS256 only", id_token_signed_response_alg=HOSTILE)
reg("reg-restricted-scope", "administrator", scope="openid introspection")
reg("reg-unknown-scope-hostile", "unknown scopes", scope=f"openid {HOSTILE}")
reg("reg-unknown-details-type-hostile", "authorization_details_types", authorization_details_types=[HOSTILE])


@case("reg-user-code-not-supported", 400, "invalid_client_metadata", "does not support")
def _(w: World) -> HttpResponse:
    w.settings.AUTHZ = {**w.settings.AUTHZ, "USER_CODE_SUPPORTED": False}
    return w.register(poll_client(backchannel_user_code_parameter=True))


# The models' full_clean: Django's own messages, CibaClient.clean, authz.clients.keys.parse_jwks and approvals.outbound.
reg("reg-client-name-too-long", "client_name", client_name=HOSTILE * 40)
reg("reg-client-uri-hostile", "client_uri", client_uri=HOSTILE)
PKJWT = {"token_endpoint_auth_method": "private_key_jwt"}
reg("reg-private-key-jwt-without-keys", "public keys", **PKJWT)
reg("reg-jwks-and-jwks-uri", "not both", jwks={"keys": [ec_jwk("k1")]}, jwks_uri="https://agent.example/jwks", **PKJWT)
reg("reg-jwks-without-keys-array", "keys array", jwks={"kid": HOSTILE}, **PKJWT)
reg("reg-jwks-empty", "has no keys", jwks={"keys": []}, **PKJWT)
reg("reg-jwks-too-many", "more than", jwks={"keys": [ec_jwk(str(n)) for n in range(21)]}, **PKJWT)
reg("reg-jwk-not-an-object", "not a JSON object", jwks={"keys": [HOSTILE]}, **PKJWT)
reg("reg-jwk-private-hostile-kid", "private", jwks={"keys": [ec_jwk(HOSTILE, d=HOSTILE)]}, **PKJWT)
reg("reg-jwk-kid-not-a-string", "kid must be", jwks={"keys": [ec_jwk(), {**ec_jwk(), "kid": 7}]}, **PKJWT)
reg("reg-jwk-kid-twice-hostile", "used twice", jwks={"keys": [ec_jwk(HOSTILE), ec_jwk(HOSTILE)]}, **PKJWT)
reg("reg-jwk-type-hostile", "only RSA", jwks={"keys": [ec_jwk(HOSTILE, kty=HOSTILE)]}, **PKJWT)
reg("reg-jwk-alg-hostile", "is not supported", jwks={"keys": [ec_jwk(HOSTILE, alg=HOSTILE)]}, **PKJWT)
reg("reg-jwk-invalid", "not a valid EC public key", jwks={"keys": [ec_jwk(HOSTILE, x=HOSTILE)]}, **PKJWT)
reg("reg-jwk-encryption-only", "no signing keys", jwks={"keys": [ec_jwk(HOSTILE, use="enc")]}, **PKJWT)
reg("reg-ping-without-endpoint", "need one", backchannel_token_delivery_mode="ping")


@case("reg-rsa-key-too-small", 400, "invalid_client_metadata", "at least 2048 bits")
def _(w: World) -> HttpResponse:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(small, as_dict=True), "kid": HOSTILE}
    return w.register(poll_client(jwks={"keys": [jwk]}, **PKJWT))


def reg_url(id: str, url: str, mentions: str) -> None:
    """The notification endpoint and jwks_uri rules (approvals.outbound.check_url), with the URL's text quoted back."""
    reg(
        id,
        mentions,
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint=url,
    )


reg_url("reg-url-hostile", f"https://agent.example/{HOSTILE}", "plain ASCII")
reg_url("reg-url-malformed", "https://[::1", "malformed")
reg_url("reg-url-not-https", "ftp://agent.example/cb", "absolute https")
reg_url("reg-url-port-zero", "https://agent.example:0/cb", "malformed")
reg_url("reg-url-credentials", "https://user:pass@agent.example/cb", "credentials")
reg_url("reg-url-fragment", "https://agent.example/cb#x", "fragment")
reg_url("reg-url-host-hostile", 'https://a"b.invalid/cb', "does not resolve")
reg_url("reg-url-host-not-a-name", "https://a..b/cb", "does not resolve")
reg_url("reg-url-plain-http", "http://93.184.216.34/cb", "must use https")
reg_url("reg-url-private-address", "https://10.0.0.1/cb", "Not allowed")
reg("reg-jwks-uri-private-address", "jwks_uri", jwks_uri="https://169.254.169.254/jwks", **PKJWT)


# --- registration: GET, PUT and DELETE /oauth/register/<client_id>/ (RFC 7592) ----------------------------------------


@case("mgmt-post", 405, "invalid_request", "not allowed")
def _(w: World) -> HttpResponse:
    return w.manage("post", w.registered())


@case("mgmt-off", 404, "not_found", "not enabled")
def _(w: World) -> HttpResponse:
    registered = w.registered()
    w.settings.REGISTRATION_MODE = "off"
    return w.manage("get", registered)


@case("mgmt-get-without-token", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    return Client().get(w.registered()["registration_client_uri"].removeprefix(ISSUER))


@case("mgmt-get-unknown-token-hostile", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    return w.manage("get", w.registered(), token="nope")


@case("mgmt-get-expired-token", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    registered = w.registered()
    get_access_token_model().objects.filter(application__client_id=registered["client_id"]).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    return w.manage("get", registered)


@case("mgmt-get-another-clients-token", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    one, two = w.registered(), w.registered(client_name="Other bot")
    return w.manage("get", one, token=two["registration_access_token"])


@case("mgmt-get-manual-client", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    token = _issue_registration_token(w.agent.application, None)
    return w.manage("get", {"registration_client_uri": f"{REGISTER}{w.agent.client_id}/"}, token=token)


@case("mgmt-delete-without-token", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    return Client().delete(w.registered()["registration_client_uri"].removeprefix(ISSUER))


@case("mgmt-put-without-token", 401, "invalid_token", "")
def _(w: World) -> HttpResponse:
    path = w.registered()["registration_client_uri"].removeprefix(ISSUER)
    return Client().put(path, json.dumps(poll_client()), content_type="application/json")


@case("mgmt-put-client-id-hostile", 400, "invalid_client_metadata", "client_id must be")
def _(w: World) -> HttpResponse:
    return w.manage("put", w.registered(), poll_client(client_id=HOSTILE))


@case("mgmt-put-chosen-secret", 400, "invalid_client_metadata", "client_secret")
def _(w: World) -> HttpResponse:
    registered = w.registered()
    return w.manage("put", registered, poll_client(client_id=registered["client_id"], client_secret=HOSTILE))


@case("mgmt-put-not-json", 400, "invalid_client_metadata", "not valid JSON")
def _(w: World) -> HttpResponse:
    registered = w.registered()
    path = registered["registration_client_uri"].removeprefix(ISSUER)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {registered['registration_access_token']}"}
    return Client().put(path, HOSTILE, content_type="application/json", **headers)


@case("mgmt-put-push-without-endpoint", 400, "invalid_client_metadata", "need one")
def _(w: World) -> HttpResponse:
    registered = w.registered()
    return w.manage(
        "put", registered, poll_client(client_id=registered["client_id"], backchannel_token_delivery_mode="push")
    )


@case("mgmt-put-against-fapi", 400, "invalid_client_metadata", "FAPI-CIBA")
def _(w: World) -> HttpResponse:
    registered = w.registered(
        **PKJWT, backchannel_authentication_request_signing_alg="PS256", jwks={"keys": [ec_jwk()]}
    )
    CibaClient.objects.filter(application__client_id=registered["client_id"]).update(fapi_ciba=True)
    metadata = poll_client(
        client_id=registered["client_id"],
        backchannel_token_delivery_mode="push",
        backchannel_client_notification_endpoint="http://127.0.0.1:9/cb",
    )
    return w.manage("put", registered, metadata)


@case("mgmt-put-with-a-stale-prompt-channel", 400, "invalid_client_metadata", "Not configured")
def _(w: World) -> HttpResponse:
    # An administrator chose a prompt channel the server no longer has; the client's update still validates it.
    registered = w.registered()
    CibaClient.objects.filter(application__client_id=registered["client_id"]).update(prompt_channels=HOSTILE)
    return w.manage("put", registered, poll_client(client_id=registered["client_id"]))


# --- introspection (authz.tokens.introspection) -----------------------------------------------------------------------


@case("introspect-get", 405, "invalid_request", "POST")
def _(w: World) -> HttpResponse:
    return w.agent.http.get(INTROSPECT, {"token": HOSTILE}, **w.agent.basic())


@case("introspect-without-token", 400, "invalid_request", "Token parameter is missing")
def _(w: World) -> HttpResponse:
    return w.agent.post(INTROSPECT, {"token_type_hint": HOSTILE})


# --- revocation (DOT's view, oauthlib's endpoint, authz.server) -------------------------------------------------------


@case("revoke-without-token", 400, "invalid_request", "token")
def _(w: World) -> HttpResponse:
    return w.agent.post(REVOKE, {"token_type_hint": HOSTILE})


@case("revoke-no-credentials", 401, "invalid_client", None)
def _(w: World) -> HttpResponse:
    return form(REVOKE, {"token": HOSTILE, "client_id": HOSTILE})


@case("revoke-bad-assertion", 401, "invalid_client", None)
def _(w: World) -> HttpResponse:
    signer = w.signer()
    return signer.post(REVOKE, signer.params(signer.assertion(kid=HOSTILE), token=HOSTILE))


@case("revoke-query-string", 400, "invalid_request", "query")
def _(w: World) -> HttpResponse:
    path = f"{REVOKE}?{urlencode({'x': HOSTILE})}"
    return w.agent.http.post(path, urlencode({"token": "x"}), content_type=FORM, **w.agent.basic())


# --- the automated-approval endpoint for certification runs (approvals.views) -----------------------------------------


def automated(w: World) -> None:
    w.settings.APPROVALS = {**w.settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": AUTOMATED_SECRET}


@case("automated-wrong-secret", 403, "access_denied", None)
def _(w: World) -> HttpResponse:
    automated(w)
    return Client().post(AUTOMATED, {"token": HOSTILE, "type": "allow", "secret": HOSTILE})


@case("automated-bad-parameters", 400, "invalid_request", "type=allow|deny")
def _(w: World) -> HttpResponse:
    automated(w)
    return Client().post(AUTOMATED, {"token": HOSTILE, "type": HOSTILE, "secret": AUTOMATED_SECRET})


@case("automated-not-pending", 409, "invalid_request", "Not pending")
def _(w: World) -> HttpResponse:
    automated(w)
    auth_req_id = w.pending().auth_req_id
    factories.decide(auth_req_id, approve=False)
    return Client().post(AUTOMATED, {"token": auth_req_id, "type": "allow", "secret": AUTOMATED_SECRET})


# --- the messages in the source ---------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# Not on the wire: the admin's forms speak to staff in HTML.
NOT_ON_THE_WIRE = {ROOT / "authz" / "admin.py", ROOT / "approvals" / "admin.py"}
# Exceptions whose message becomes an error_description, or part of one: the protocol errors (ours and oauthlib's,
# with our subclasses of both), the key, JWT and URL checks embedded into them, and the models' validation that
# registration reports as invalid_client_metadata.
EMBEDDED = {"JoseError", "JwksError", "OutboundError", "ValidationError"}
DESCRIPTION_NAMES = {"description", "default_description", "error_description"}


def _subclass_names(cls: type) -> set[str]:
    names: set[str] = set()
    for sub in cls.__subclasses__():
        names |= {sub.__name__} | _subclass_names(sub)
    return names


def wire_bound_callables() -> set[str]:
    import authz.clients.registration.views  # noqa: F401 (its error classes, and those of the modules it imports)
    import authz.views  # noqa: F401

    return {"OAuthError", "OAuth2Error"} | _subclass_names(OAuthError) | _subclass_names(OAuth2Error) | EMBEDDED


def _constants(node: ast.AST) -> Iterator[ast.Constant]:
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def wire_literals(source: str, callables: set[str]) -> Iterator[ast.Constant]:
    """The string literals (f-string parts included) that end up in an error_description: the arguments of a
    wire-bound exception, `description=` keywords, `default_description`/`description` class attributes, values
    stored under an "error_description" key, messages collected in an `errors` dict for a ValidationError, and
    tables named *_ERRORS (the push errors of authz.ciba.notify)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            if _name(node.func) in callables:
                for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                    yield from _constants(argument)
            else:
                for keyword in node.keywords:
                    if keyword.arg in DESCRIPTION_NAMES:
                        yield from _constants(keyword.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "error_description":
                    yield from _constants(value)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = _name(target.value if isinstance(target, ast.Subscript) else target)
                subscript_of_errors = isinstance(target, ast.Subscript) and name == "errors"
                if node.value is not None and (
                    name in DESCRIPTION_NAMES or name.endswith("_ERRORS") or subscript_of_errors
                ):
                    yield from _constants(node.value)


def bad_literals(source: str, callables: set[str]) -> list[str]:
    return [
        f"line {constant.lineno}: {constant.value!r}"
        for constant in wire_literals(source, callables)
        if not ALLOWED.fullmatch(constant.value)
    ]


def sources() -> list[Path]:
    paths = [*ROOT.joinpath("authz").rglob("*.py"), *ROOT.joinpath("approvals").rglob("*.py")]
    return sorted(p for p in paths if "migrations" not in p.parts and p not in NOT_ON_THE_WIRE)


def test_no_message_in_the_source_has_characters_outside_the_set() -> None:
    # authz.errors.wire_text would replace them on the wire, silently: the message must be fixed where it is written
    # (cite specs as "CIBA Core 7.1" or "RFC 6749 section 2.3", quote with ', dash with -).
    callables = wire_bound_callables()
    found = {
        str(path.relative_to(ROOT)): bad
        for path in sources()
        if (bad := bad_literals(path.read_text(encoding="utf-8"), callables))
    }
    assert found == {}


def test_the_source_scan_finds_the_messages() -> None:
    callables = wire_bound_callables()
    count = sum(len(list(wire_literals(path.read_text(encoding="utf-8"), callables))) for path in sources())
    assert count > 300, count  # every raise of a protocol error and more: a scan that finds nothing proves nothing


def test_the_source_scan_catches_each_kind_of_bad_message() -> None:
    snippet = r"""
raise InvalidScope("scope must contain openid (CIBA Core \u00a77.1).")
raise JoseError(f"The {what}'s kid \"{kid}\" is unknown.")
raise errors.InvalidRequestError(description="resource \u2014 or audience", request=request)
raise CustomThing(description="C:\\path")
body = {"error": "x", "error_description": "\u201cquoted\u201d"}
errors["field"] = _("one\u2026")
PUSH_ERRORS = {"denied": ("access_denied", "d\u00e9ni")}
class Refused(OAuthError):
    default_description = "Refused \u2192 retry."
raise InvalidClient("This is fine (RFC 7523 section 3).")
logger.info("Not a message: \u00a7 and \"quotes\" are fine in logs.")
"""
    bad = bad_literals(snippet, wire_bound_callables())
    lines = sorted({int(line.split(":")[0].removeprefix("line ")) for line in bad})
    assert lines == [2, 3, 4, 5, 6, 7, 8, 10], bad


# --- the test ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def world(make_agent, approver, settings) -> Iterator[World]:
    with ExitStack() as stack:
        yield World(make_agent, approver, settings, stack)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_description_is_within_the_allowed_characters(world: World, case: Case) -> None:
    response = case.send(world)

    assert response.status_code == case.status, response.content
    assert response["Content-Type"].split(";")[0] == "application/json", response.content
    body = response.json()
    assert body.get("error") == case.error, body
    description = body.get("error_description")
    if case.mentions is None:
        assert description is None, body
        return
    assert isinstance(description, str) and description, body
    assert ALLOWED.fullmatch(description), f"{description!r} has characters RFC 6749 section 5.2 does not allow"
    assert case.mentions in description, body
    challenge = response.get("WWW-Authenticate", "")
    # The Bearer challenge of registration quotes the description (RFC 6750 section 3): it must stay one value.
    assert challenge.count('"') % 2 == 0, challenge


def test_the_cases_are_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
