"""The backchannel authentication endpoint, POST /oauth/bc-authorize/ (CIBA Core §7, §13): every answer it gives."""

from __future__ import annotations

import base64
import json
import re
import time
import unicodedata
from datetime import timedelta
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from oauth2_provider.models import get_application_model

from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest
from authz.conf import authz_settings
from authz.models import CibaClient
from tests import factories
from tests.conftest import FORM
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

BC_AUTHORIZE = "/oauth/bc-authorize/"
ISSUER = "http://testserver"
AUTH_REQ_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def post_form(params, *, path: str = BC_AUTHORIZE, **extra):
    """A form-encoded POST without the Agent's Basic header."""
    return Client().post(path, urlencode(params), content_type=FORM, **extra)


def assert_acknowledged(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    return body


def approval_request_for(response) -> ApprovalRequest:
    return ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])


def published_kids() -> list[str]:
    """The kids DOT publishes at the JWKS endpoint, the active key first."""
    return [key["kid"] for key in Client().get("/oauth/jwks/").json()["keys"]]


def server_id_token(
    *, aud: str, sub: str, exp: int, iss: str = ISSUER, pem: str | None = None, kid: str | None = None, **claims
) -> str:
    """An ID token signed like the server signs them (RS256, kid = the active key's, as published)."""
    server_pem = settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"]
    payload = {"iss": iss, "sub": sub, "aud": aud, "iat": exp - 600, "auth_time": exp - 600, "exp": exp, **claims}
    return jwt.encode(payload, pem or server_pem, algorithm="RS256", headers={"kid": kid or published_kids()[0]})


# --- success ----------------------------------------------------------------------------------------------------------


def test_acknowledges_a_request_with_client_secret_basic(agent, approver):
    response = agent.bc_authorize(scope="openid profile", login_hint="alice")

    body = assert_acknowledged(response)
    assert response["Pragma"] == "no-cache"
    approval_request = approval_request_for(response)
    assert approval_request.client == agent.application
    assert approval_request.user == approver.user
    assert approval_request.scope == "openid profile"
    assert approval_request.status == ApprovalRequest.Status.PENDING
    assert approval_request.hint_type == ApprovalRequest.HintType.LOGIN_HINT
    assert body["expires_in"] == authz_settings.DEFAULT_EXPIRY_SECONDS


def test_acknowledges_a_request_with_client_secret_post(make_agent, approver):
    agent = make_agent(token_endpoint_auth_method=CibaClient.AuthMethod.CLIENT_SECRET_POST)

    response = post_form(
        {"client_id": agent.client_id, "client_secret": agent.client_secret, "scope": "openid", "login_hint": "alice"}
    )

    assert_acknowledged(response)
    assert approval_request_for(response).client == agent.application


def test_basic_credentials_are_form_urlencoded_before_base64(make_agent, approver):
    # RFC 6749 §2.3.1: a client_id or secret with reserved characters is form-urlencoded inside the Basic header.
    agent = make_agent()
    get_application_model().objects.filter(pk=agent.application.pk).update(client_id="agent:one+two")
    raw = f"agent%3Aone%2Btwo:{agent.client_secret}".encode()

    response = post_form(
        {"scope": "openid", "login_hint": "alice"}, HTTP_AUTHORIZATION="Basic " + base64.b64encode(raw).decode()
    )

    assert_acknowledged(response)


# --- client authentication --------------------------------------------------------------------------------------------


def test_client_secret_post_from_a_basic_client_is_invalid_client(agent, approver):
    response = post_form(
        {"client_id": agent.client_id, "client_secret": agent.client_secret, "scope": "openid", "login_hint": "alice"}
    )

    body = assert_oauth_error(response, 401, "invalid_client")
    assert "client_secret_basic" in body["error_description"]
    assert not ApprovalRequest.objects.exists()


def test_client_secret_basic_from_a_post_client_is_invalid_client(make_agent, approver):
    agent = make_agent(token_endpoint_auth_method=CibaClient.AuthMethod.CLIENT_SECRET_POST)

    response = agent.bc_authorize(scope="openid", login_hint="alice")

    body = assert_oauth_error(response, 401, "invalid_client")
    assert "client_secret_post" in body["error_description"]
    assert not ApprovalRequest.objects.exists()


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(lambda agent: _basic(agent.client_id, agent.client_secret + "x"), id="wrong-secret"),
        pytest.param(lambda agent: _basic(agent.client_id, ""), id="empty-secret"),
        pytest.param(lambda agent: _basic("no-such-client", agent.client_secret), id="unknown-client-id"),
        pytest.param(lambda agent: _basic("", agent.client_secret), id="empty-client-id"),
        pytest.param(lambda agent: {}, id="no-authentication"),
        pytest.param(lambda agent: {"HTTP_AUTHORIZATION": "Bearer abc"}, id="other-scheme"),
        pytest.param(lambda agent: {"HTTP_AUTHORIZATION": "Basic %%%not-base64"}, id="basic-not-base64"),
        pytest.param(
            lambda agent: {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
            id="basic-not-utf8",
        ),
        pytest.param(
            lambda agent: {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(agent.client_id.encode()).decode()},
            id="basic-without-colon",
        ),
    ],
)
def test_failed_client_authentication_is_invalid_client(agent, approver, credentials):
    response = post_form({"scope": "openid", "login_hint": "alice"}, **credentials(agent))

    assert_oauth_error(response, 401, "invalid_client")
    assert not ApprovalRequest.objects.exists()


def test_wrong_client_secret_in_the_body_is_invalid_client(make_agent, approver):
    agent = make_agent(token_endpoint_auth_method=CibaClient.AuthMethod.CLIENT_SECRET_POST)

    response = post_form(
        {"client_id": agent.client_id, "client_secret": "wrong", "scope": "openid", "login_hint": "alice"}
    )

    assert_oauth_error(response, 401, "invalid_client")


def test_basic_and_client_secret_in_the_body_is_invalid_request(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice", client_secret=agent.client_secret)

    assert_oauth_error(response, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


def test_client_id_in_the_body_that_differs_from_basic_is_invalid_request(agent, make_agent, approver):
    other = make_agent(name="Other")

    response = agent.bc_authorize(scope="openid", login_hint="alice", client_id=other.client_id)

    assert_oauth_error(response, 400, "invalid_request")


def test_public_client_is_invalid_client(approver):
    application, secret = factories.make_public_client()

    response = post_form({"scope": "openid", "login_hint": "alice"}, **_basic(application.client_id, secret))

    assert_oauth_error(response, 401, "invalid_client")
    assert not ApprovalRequest.objects.exists()


@pytest.mark.parametrize(
    "agent_kwargs", [pytest.param({"ciba": False}, id="no-ciba-settings"), pytest.param({"ciba_enabled": False})]
)
def test_client_not_allowed_to_use_ciba_is_unauthorized_client(make_agent, approver, agent_kwargs):
    agent = make_agent(**agent_kwargs)

    response = agent.bc_authorize(scope="openid", login_hint="alice")

    assert_oauth_error(response, 400, "unauthorized_client")
    assert not ApprovalRequest.objects.exists()


# --- scope ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error"),
    [
        pytest.param({}, "invalid_request", id="missing"),
        pytest.param({"scope": ""}, "invalid_request", id="empty"),
        pytest.param({"scope": "   "}, "invalid_request", id="blank"),
        pytest.param({"scope": "profile email"}, "invalid_scope", id="without-openid"),
        pytest.param({"scope": "openid bogus"}, "invalid_scope", id="unknown"),
        pytest.param({"scope": "OPENID"}, "invalid_scope", id="openid-is-case-sensitive"),
    ],
)
def test_bad_scope_is_refused(agent, approver, params, error):
    response = agent.bc_authorize(login_hint="alice", **params)

    assert_oauth_error(response, 400, error)
    assert not ApprovalRequest.objects.exists()


def test_unknown_scope_is_named_in_the_description(agent, approver):
    body = assert_oauth_error(agent.bc_authorize(scope="openid bogus", login_hint="alice"), 400, "invalid_scope")

    assert "bogus" in body["error_description"]


def test_scope_outside_the_clients_allowed_scopes_is_invalid_scope(make_agent, approver):
    agent = make_agent(allowed_scopes="openid profile")

    response = agent.bc_authorize(scope="openid email", login_hint="alice")

    body = assert_oauth_error(response, 400, "invalid_scope")
    assert "email" in body["error_description"]
    assert not ApprovalRequest.objects.exists()


def test_scope_within_the_clients_allowed_scopes_succeeds(make_agent, approver):
    agent = make_agent(allowed_scopes="openid profile")

    assert_acknowledged(agent.bc_authorize(scope="openid profile", login_hint="alice"))


@pytest.mark.parametrize(
    ("scope", "stored"),
    [
        ("profile openid", "profile openid"),
        ("openid", "openid"),
        ("openid  openid\tprofile", "openid profile"),
    ],
)
def test_scope_with_openid_in_any_order_succeeds(agent, approver, scope, stored):
    response = agent.bc_authorize(scope=scope, login_hint="alice")

    assert_acknowledged(response)
    assert approval_request_for(response).scope == stored


# --- hints ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hints",
    [
        pytest.param({}, id="none"),
        pytest.param({"login_hint": "alice", "id_token_hint": "x.y.z"}, id="two"),
        pytest.param({"login_hint": "alice", "login_hint_token": "x.y.z"}, id="two-with-login-hint-token"),
        pytest.param({"login_hint": "alice", "id_token_hint": "x.y.z", "login_hint_token": "x.y.z"}, id="three"),
        pytest.param({"login_hint": ""}, id="empty-login-hint"),
        pytest.param({"id_token_hint": ""}, id="empty-id-token-hint"),
    ],
)
def test_not_exactly_one_usable_hint_is_invalid_request(agent, approver, hints):
    response = agent.bc_authorize(scope="openid", **hints)

    assert_oauth_error(response, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


def test_login_hint_token_is_invalid_request_with_a_clear_description(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint_token="eyJhbGciOiJub25lIn0.e30.")

    body = assert_oauth_error(response, 400, "invalid_request")
    assert "login_hint_token" in body["error_description"]
    assert "not accepted" in body["error_description"]


@pytest.mark.parametrize(
    "login_hint",
    [
        pytest.param("alice", id="username"),
        pytest.param("alice@example.com", id="email"),
        pytest.param("Alice@Example.COM", id="email-case-insensitive"),
        pytest.param("+14155550123", id="e164-phone"),
        pytest.param("+1 415-555-0123", id="phone-normalised-to-e164"),
    ],
)
def test_login_hint_identifies_the_user(agent, approver, login_hint):
    response = agent.bc_authorize(scope="openid", login_hint=login_hint)

    assert_acknowledged(response)
    assert approval_request_for(response).user == approver.user


def test_plus_in_a_phone_login_hint_must_be_url_encoded(agent, approver):
    # A raw '+' in a form body is a space: " 14155550123" names nobody.
    raw = "scope=openid&login_hint=+14155550123"
    response = agent.http.post(BC_AUTHORIZE, raw, content_type=FORM, **agent.basic())

    assert_oauth_error(response, 400, "unknown_user_id")


@pytest.mark.parametrize(
    "login_hint",
    [
        pytest.param("nobody", id="unknown-username"),
        pytest.param("nobody@example.com", id="unknown-email"),
        pytest.param("+14155550199", id="unknown-phone"),
        pytest.param("+1", id="invalid-phone"),
        pytest.param("a" * 300, id="too-long"),
    ],
)
def test_login_hint_naming_nobody_is_unknown_user_id(agent, approver, login_hint):
    response = agent.bc_authorize(scope="openid", login_hint=login_hint)

    assert_oauth_error(response, 400, "unknown_user_id")
    assert not ApprovalRequest.objects.exists()


def test_email_shared_by_two_users_is_unknown_user_id(agent, approver):
    factories.make_approver("alice2", email="ALICE@example.com")

    response = agent.bc_authorize(scope="openid", login_hint="alice@example.com")

    assert_oauth_error(response, 400, "unknown_user_id")


@pytest.mark.parametrize("login_hint", ["alice", "alice@example.com", "+14155550123"])
def test_inactive_user_is_unknown_user_id(agent, approver, login_hint):
    get_user_model().objects.filter(pk=approver.user.pk).update(is_active=False)

    response = agent.bc_authorize(scope="openid", login_hint=login_hint)

    assert_oauth_error(response, 400, "unknown_user_id")
    assert not ApprovalRequest.objects.exists()


def test_id_token_hint_from_an_earlier_flow_identifies_the_user(agent, approver, obtain_tokens):
    id_token = obtain_tokens(agent, approver.user)["id_token"]

    response = agent.bc_authorize(scope="openid", id_token_hint=id_token)

    assert_acknowledged(response)
    approval_request = approval_request_for(response)
    assert approval_request.user == approver.user
    assert approval_request.hint_type == ApprovalRequest.HintType.ID_TOKEN_HINT


def test_id_token_hint_issued_to_another_client_is_invalid_request(agent, make_agent, approver, obtain_tokens):
    other = make_agent(name="Other agent")
    id_token = obtain_tokens(other, approver.user)["id_token"]
    before = ApprovalRequest.objects.count()

    response = agent.bc_authorize(scope="openid", id_token_hint=id_token)

    body = assert_oauth_error(response, 400, "invalid_request")
    assert "another client" in body["error_description"]
    assert ApprovalRequest.objects.count() == before


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "999999"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def _bad_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _unsigned(token: str) -> str:
    _header, payload, _signature = token.split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    return f"{header}.{payload}."


def _hs256_with_public_key(token: str) -> str:
    # Algorithm confusion: an HMAC-signed token must not pass for one of the server's RS256 tokens.
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, "a shared secret the server never agreed to", algorithm="HS256")


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(_tamper, id="tampered-payload"),
        pytest.param(_bad_signature, id="bad-signature"),
        pytest.param(_unsigned, id="alg-none"),
        pytest.param(_hs256_with_public_key, id="alg-hs256"),
        pytest.param(lambda token: "garbage", id="garbage"),
        pytest.param(lambda token: "a.b.c", id="three-garbage-parts"),
        pytest.param(lambda token: token.split(".")[0] + ".e30.", id="header-only"),
    ],
)
def test_forged_or_garbage_id_token_hint_is_invalid_request(agent, approver, obtain_tokens, transform):
    id_token = obtain_tokens(agent, approver.user)["id_token"]
    before = ApprovalRequest.objects.count()

    response = agent.bc_authorize(scope="openid", id_token_hint=transform(id_token))

    assert_oauth_error(response, 400, "invalid_request")
    assert ApprovalRequest.objects.count() == before


def test_expired_id_token_hint_is_accepted(agent, approver):
    # CIBA Core §7.1: the ID token "previously issued"; it may well have expired since.
    token = server_id_token(aud=agent.client_id, sub=str(approver.user.pk), exp=int(time.time()) - 86400)

    response = agent.bc_authorize(scope="openid", id_token_hint=token)

    assert_acknowledged(response)
    assert approval_request_for(response).user == approver.user


def _other_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_id_token_hint_signed_with_a_rotated_out_key_is_accepted(agent, approver, settings):
    # DOT still publishes OIDC_RSA_PRIVATE_KEYS_INACTIVE, so ID tokens they signed still verify.
    retired = _other_key_pem()
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [retired]}
    active_kid, retired_kid = published_kids()
    claims = {"aud": agent.client_id, "sub": str(approver.user.pk), "exp": int(time.time()) + 600}

    response = agent.bc_authorize(scope="openid", id_token_hint=server_id_token(**claims, pem=retired, kid=retired_kid))

    assert_acknowledged(response)
    assert approval_request_for(response).user == approver.user
    assert active_kid != retired_kid


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(lambda: {"iss": "https://evil.example"}, id="other-issuer"),
        pytest.param(lambda: {"aud": "someone-else"}, id="other-audience"),
        pytest.param(lambda: {"pem": _other_key_pem()}, id="other-key-same-kid"),
    ],
)
def test_id_token_hint_not_from_this_server_for_this_client_is_invalid_request(agent, approver, overrides):
    claims = {"aud": agent.client_id, "sub": str(approver.user.pk), "exp": int(time.time()) + 600, **overrides()}

    response = agent.bc_authorize(scope="openid", id_token_hint=server_id_token(**claims))

    assert_oauth_error(response, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


@pytest.mark.parametrize("sub", ["999999", "not-a-number"])
def test_id_token_hint_for_a_user_that_does_not_exist_is_unknown_user_id(agent, approver, sub):
    token = server_id_token(aud=agent.client_id, sub=sub, exp=int(time.time()) + 600)

    response = agent.bc_authorize(scope="openid", id_token_hint=token)

    assert_oauth_error(response, 400, "unknown_user_id")


def test_id_token_hint_for_an_inactive_user_is_unknown_user_id(agent, approver):
    token = server_id_token(aud=agent.client_id, sub=str(approver.user.pk), exp=int(time.time()) + 600)
    get_user_model().objects.filter(pk=approver.user.pk).update(is_active=False)

    response = agent.bc_authorize(scope="openid", id_token_hint=token)

    assert_oauth_error(response, 400, "unknown_user_id")


# --- binding_message --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("A" * 64, id="64-chars"),
        pytest.param("Book flight LH 400 (FRA-JFK), 2 seats: 1.234,50 EUR!", id="ascii-punctuation"),
        pytest.param("Überweisung 20 €", id="german-euro"),
        pytest.param("東京行きの新幹線を予約する", id="japanese"),
        pytest.param("تحويل ٢٠ دولار إلى أحمد", id="arabic"),
        pytest.param("Перевод 500 ₽ Ивану", id="cyrillic"),
        pytest.param("भुगतान ₹ 250 स्वीकार करें", id="devanagari-with-combining-marks"),
        pytest.param("e\u0301" * 64, id="64-chars-after-nfc"),
        pytest.param("Set thermostat to 21°C ^ `code` © 2026", id="text-symbols"),
    ],
)
def test_binding_message_of_letters_digits_and_punctuation_is_accepted(agent, approver, message):
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message=message)

    assert_acknowledged(response)
    assert approval_request_for(response).binding_message == unicodedata.normalize("NFC", message)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("A" * 65, id="65-chars"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("Pay\nAlice", id="newline"),
        pytest.param("Pay\rAlice", id="carriage-return"),
        pytest.param("Pay\tAlice", id="tab"),
        pytest.param("Pay\x01Alice", id="control-char"),
        pytest.param("Pay\x7fAlice", id="delete"),
        pytest.param("Pay\u202eecilA", id="rtl-override"),
        pytest.param("Pay\u200bAlice", id="zero-width-space"),
        pytest.param("Pay\u2028Alice", id="line-separator"),
        pytest.param("Pay Alice \U0001f600", id="emoji"),
        pytest.param("Fly \u2708\ufe0f", id="emoji-presentation"),
        pytest.param("Thumbs \U0001f44d\U0001f3fd", id="emoji-with-skin-tone-modifier"),
        pytest.param("Skin tone alone \U0001f3fd", id="lone-skin-tone-modifier"),
    ],
)
def test_unacceptable_binding_message_is_invalid_binding_message(agent, approver, message):
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message=message)

    assert_oauth_error(response, 400, "invalid_binding_message")
    assert not ApprovalRequest.objects.exists()


def test_binding_message_with_nul_is_refused(agent, approver):
    # NUL is refused for every parameter before validation (PostgreSQL cannot store it), hence invalid_request.
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="Pay\x00Alice")

    body = assert_oauth_error(response, 400, "invalid_request")
    assert "NUL" in body["error_description"]
    assert not ApprovalRequest.objects.exists()


def test_binding_message_description_names_the_offending_character(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="Pay\u202eecilA")

    body = assert_oauth_error(response, 400, "invalid_binding_message")
    assert "U+202E" in body["error_description"]


# --- requested_expiry -------------------------------------------------------------------------------------------------


def test_requested_expiry_sets_expires_in(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice", requested_expiry="120")

    assert assert_acknowledged(response)["expires_in"] == 120
    approval_request = approval_request_for(response)
    assert approval_request.expires_at - approval_request.created_at == timedelta(seconds=120)


@pytest.mark.parametrize("requested", ["3601", "86400", "999999999", "99999999999999999999"])
def test_requested_expiry_above_the_maximum_is_capped(agent, approver, requested):
    maximum = authz_settings.MAX_EXPIRY_SECONDS
    assert int(requested) > maximum

    response = agent.bc_authorize(scope="openid", login_hint="alice", requested_expiry=requested)

    assert assert_acknowledged(response)["expires_in"] == maximum


def test_requested_expiry_cap_follows_the_setting(settings, agent, approver):
    settings.AUTHZ = {**settings.AUTHZ, "MAX_EXPIRY_SECONDS": 60}

    response = agent.bc_authorize(scope="openid", login_hint="alice", requested_expiry="120")

    assert assert_acknowledged(response)["expires_in"] == 60


@pytest.mark.parametrize("requested", ["0", "-5", "abc", "1.5", "", " ", "1e3", "+5", "١٢٠", "0x10"])
def test_requested_expiry_that_is_not_a_positive_integer_is_invalid_request(agent, approver, requested):
    response = agent.bc_authorize(scope="openid", login_hint="alice", requested_expiry=requested)

    assert_oauth_error(response, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


# --- acr_values -------------------------------------------------------------------------------------------------------


def test_acr_values_are_recorded(agent, approver):
    response = agent.bc_authorize(
        scope="openid", login_hint="alice", acr_values="urn:example:acr:mfa  urn:example:acr:pwd"
    )

    assert_acknowledged(response)
    assert approval_request_for(response).acr_values == "urn:example:acr:mfa urn:example:acr:pwd"


def test_acr_values_default_to_empty(agent, approver):
    assert approval_request_for(agent.bc_authorize(scope="openid", login_hint="alice")).acr_values == ""


def test_too_long_acr_values_is_invalid_request(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice", acr_values="a" * 256)

    assert_oauth_error(response, 400, "invalid_request")


# --- user_code --------------------------------------------------------------------------------------------------------


@pytest.fixture
def code_agent(make_agent):
    return make_agent(name="Careful agent", backchannel_user_code_parameter=True)


@pytest.fixture
def bob(db):
    return factories.make_approver("bob", user_code="4711")


def test_right_user_code_succeeds(code_agent, bob):
    assert_acknowledged(code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711"))


def test_missing_user_code_is_missing_user_code(code_agent, bob):
    response = code_agent.bc_authorize(scope="openid", login_hint="bob")

    assert_oauth_error(response, 400, "missing_user_code")
    assert not ApprovalRequest.objects.exists()


def test_empty_user_code_is_missing_user_code(code_agent, bob):
    assert_oauth_error(
        code_agent.bc_authorize(scope="openid", login_hint="bob", user_code=""), 400, "missing_user_code"
    )


def test_wrong_user_code_is_invalid_user_code(code_agent, bob):
    response = code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="1234")

    assert_oauth_error(response, 400, "invalid_user_code")
    assert not ApprovalRequest.objects.exists()


def test_user_code_for_a_user_who_has_none_is_invalid_user_code(code_agent, approver):
    response = code_agent.bc_authorize(scope="openid", login_hint="alice", user_code="4711")

    assert_oauth_error(response, 400, "invalid_user_code")


def test_user_code_for_a_user_who_is_no_approver_is_invalid_user_code(code_agent, db):
    get_user_model().objects.create_user(username="carol", password=factories.PASSWORD)

    response = code_agent.bc_authorize(scope="openid", login_hint="carol", user_code="4711")

    assert_oauth_error(response, 400, "invalid_user_code")


def test_right_user_code_still_works_after_fewer_failures_than_the_limit(code_agent, bob):
    for _ in range(approvals_settings.USER_CODE_MAX_FAILURES - 1):
        assert_oauth_error(
            code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="0000"), 400, "invalid_user_code"
        )

    assert_acknowledged(code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711"))


def test_user_code_locks_out_after_repeated_failures(code_agent, bob):
    assert approvals_settings.USER_CODE_MAX_FAILURES == 5
    for _ in range(5):
        assert_oauth_error(
            code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="0000"), 400, "invalid_user_code"
        )

    response = code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711")

    assert_oauth_error(response, 400, "invalid_user_code")
    assert not ApprovalRequest.objects.exists()


def test_user_code_lockout_is_per_approver(code_agent, bob):
    factories.make_approver("dave", user_code="2468")
    for _ in range(5):
        code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="0000")

    assert_acknowledged(code_agent.bc_authorize(scope="openid", login_hint="dave", user_code="2468"))


@pytest.mark.parametrize("user_code", [None, "0000", "4711"])
def test_user_code_is_ignored_when_the_server_does_not_support_it(settings, code_agent, bob, user_code):
    settings.AUTHZ = {**settings.AUTHZ, "USER_CODE_SUPPORTED": False}
    params = {"scope": "openid", "login_hint": "bob"}
    if user_code is not None:
        params["user_code"] = user_code

    assert_acknowledged(code_agent.bc_authorize(**params))


@pytest.mark.parametrize("user_code", [None, "0000"])
def test_user_code_is_ignored_for_a_client_that_does_not_send_it(agent, bob, user_code):
    params = {"scope": "openid", "login_hint": "bob"}
    if user_code is not None:
        params["user_code"] = user_code

    assert_acknowledged(agent.bc_authorize(**params))


# --- the approver's own refusal ---------------------------------------------------------------------------------------


def test_approver_not_accepting_requests_is_access_denied(agent, approver):
    approver.accepting_requests = False
    approver.save(update_fields=["accepting_requests"])

    response = agent.bc_authorize(scope="openid", login_hint="alice")

    assert_oauth_error(response, 403, "access_denied")
    assert not ApprovalRequest.objects.exists()


# --- the acknowledgement ----------------------------------------------------------------------------------------------


def test_acknowledgement_has_a_strong_auth_req_id_expiry_and_interval(agent, approver):
    body = assert_acknowledged(agent.bc_authorize(scope="openid", login_hint="alice"))

    assert AUTH_REQ_ID.match(body["auth_req_id"])
    # CIBA Core §7.3: 160 bits recommended; base64url carries 6 bits per character.
    assert len(body["auth_req_id"]) >= 27
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["interval"] == 5


def test_auth_req_ids_are_unique(agent, approver):
    ids = [
        assert_acknowledged(agent.bc_authorize(scope="openid", login_hint="alice"))["auth_req_id"] for _ in range(40)
    ]

    assert len(set(ids)) == len(ids)
    assert all(AUTH_REQ_ID.match(auth_req_id) and len(auth_req_id) >= 27 for auth_req_id in ids)
    assert ApprovalRequest.objects.count() == 40


# --- hostile input ----------------------------------------------------------------------------------------------------

VALID = {"scope": "openid", "login_hint": "alice"}


def _method(method: str):
    def send(agent):
        return agent.http.generic(method, BC_AUTHORIZE, urlencode(VALID), content_type=FORM, **agent.basic())

    return send


def _raw(body: bytes | str, content_type: str = FORM, path: str = BC_AUTHORIZE, **extra):
    def send(agent):
        return agent.http.generic("POST", path, body, content_type=content_type, **{**agent.basic(), **extra})

    return send


def _one_byte_over_the_limit(agent):
    return _too_large(authz_settings.MAX_REQUEST_BYTES + 1)(agent)


def _multipart(agent):
    return agent.http.post(BC_AUTHORIZE, VALID, **agent.basic())


def _too_large(size: int):
    def send(agent):
        padding = "x" * (size - len(urlencode(VALID)) - len("&padding="))
        body = urlencode({**VALID, "padding": padding})
        assert len(body) == size
        return agent.http.generic("POST", BC_AUTHORIZE, body, content_type=FORM, **agent.basic())

    return send


@pytest.mark.parametrize(
    ("send", "status"),
    [
        pytest.param(_method("GET"), 405, id="GET"),
        pytest.param(_method("PUT"), 405, id="PUT"),
        pytest.param(_method("PATCH"), 405, id="PATCH"),
        pytest.param(_method("DELETE"), 405, id="DELETE"),
        pytest.param(_method("OPTIONS"), 405, id="OPTIONS"),
        pytest.param(_raw(json.dumps(VALID), "application/json"), 400, id="json-body"),
        pytest.param(_multipart, 400, id="multipart-body"),
        pytest.param(_raw(urlencode(VALID), "text/plain"), 400, id="text-plain-body"),
        pytest.param(_raw(urlencode(VALID), ""), 400, id="no-content-type"),
        pytest.param(_too_large(1024 * 1024), 413, id="1MB-body"),
        pytest.param(_one_byte_over_the_limit, 413, id="one-byte-over-the-limit"),
        pytest.param(_raw(urlencode([*VALID.items(), ("scope", "openid")])), 400, id="repeated-scope"),
        pytest.param(_raw(urlencode([*VALID.items(), ("login_hint", "bob")])), 400, id="repeated-login-hint"),
        pytest.param(_raw(b"scope=openid&login_hint=alice&binding_message=\xff\xfe"), 400, id="invalid-utf8"),
        pytest.param(_raw(b"scope=openid&login_hint=al\xc3ice"), 400, id="truncated-utf8-sequence"),
        pytest.param(_raw(urlencode(VALID), path=BC_AUTHORIZE + "?scope=openid"), 400, id="query-string-params"),
        pytest.param(_raw("login_hint=alice", path=BC_AUTHORIZE + "?scope=openid"), 400, id="scope-only-in-query"),
        pytest.param(_raw(urlencode({**VALID, "login_hint": "ali\x00ce"})), 400, id="nul-in-value"),
        pytest.param(_raw(urlencode({**VALID, "x\x00": "1"})), 400, id="nul-in-name"),
        pytest.param(_raw(urlencode(VALID), CONTENT_LENGTH="abc"), 400, id="bad-content-length"),
    ],
)
def test_hostile_input_is_refused_without_writing(agent, approver, send, status):
    response = send(agent)

    assert_oauth_error(response, status, "invalid_request")
    if status == 405:
        assert response["Allow"] == "POST"
    assert not ApprovalRequest.objects.exists()


def test_head_is_refused_without_writing(agent, approver):
    response = agent.http.head(BC_AUTHORIZE, **agent.basic())

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response["Cache-Control"] == "no-store"
    assert not ApprovalRequest.objects.exists()


def test_body_at_the_size_limit_is_read(agent, approver):
    response = _too_large(authz_settings.MAX_REQUEST_BYTES)(agent)

    assert_acknowledged(response)


def test_payload_limit_follows_the_setting(settings, agent, approver):
    settings.AUTHZ = {**settings.AUTHZ, "MAX_REQUEST_BYTES": 1024}

    assert_oauth_error(_too_large(1025)(agent), 413, "invalid_request")
    assert_acknowledged(_too_large(1024)(agent))


def test_form_content_type_with_charset_is_accepted(agent, approver):
    response = agent.http.post(BC_AUTHORIZE, urlencode(VALID), content_type=FORM + "; charset=UTF-8", **agent.basic())

    assert_acknowledged(response)


def test_unknown_parameters_are_ignored(agent, approver):
    # CIBA Core §7.1 / RFC 6749 §3.2: the server MUST ignore unrecognised request parameters.
    assert_acknowledged(agent.bc_authorize(**VALID, foo="bar", client_notification_token="abc"))
