"""Hostile input gets the spec's error, never a 500 (issue 14, "Hostile input must never reach a 500"), on
PostgreSQL, which refuses NUL in text where SQLite stores it:

- non-ASCII bytes in `Authorization: Basic` at every endpoint that authenticates clients: 401 invalid_client
  (authz.clients.auth._parse_basic, the one place Basic credentials are decoded);
- the device grant, which this server does not offer: unsupported_grant_type, like any grant type missing from
  grant_types_supported (authz.views.TokenView);
- a NUL in any parameter (query string or form body) or in the path: 400 invalid_request before any view runs
  (config.middleware.RefuseNulMiddleware), the automated approval endpoint's `token=%00` among them;
- non-ASCII and NUL in the other headers those endpoints read.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from approvals.models import ApprovalRequest, PushSubscription
from tests import factories, prompting
from tests.approvals.test_devices import valid_info
from tests.conftest import FORM
from tests.factories import assert_oauth_error

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
AUTOMATED_SECRET = "certification-" + "s" * 40
# What a WSGI server hands Django for header bytes outside ASCII: latin-1 characters (PEP 3333).
NON_ASCII_BASIC = [
    "Basic \u00e9\u00e9",
    "Basic " + "\u00ff" * 8,
    "Basic YWdlbnQ6c2VjcmV0\u00a0",
    "Basic \u2603",
]
CLIENT_AUTH_ENDPOINTS = ["/oauth/bc-authorize/", "/oauth/token/", "/oauth/introspect/", "/oauth/revoke/"]
BODY = {"grant_type": "client_credentials", "token": "x", "scope": "openid", "login_hint": "alice"}


def http() -> Client:
    """A client that sees the server's 500s as answers, as an attacker would, instead of raising them."""
    return Client(raise_request_exception=False)


def assert_error(response: Any, status: int, error: str) -> None:
    """An OAuth error answer: the status and a JSON body naming the error (error_description is optional in some of
    oauthlib's answers, RFC 6749 section 5.2)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0] == "application/json", response["Content-Type"]
    assert response.json()["error"] == error, response.content


@pytest.mark.parametrize("path", CLIENT_AUTH_ENDPOINTS)
@pytest.mark.parametrize("header", NON_ASCII_BASIC)
def test_non_ascii_basic_credentials_are_invalid_client(agent, path, header):
    response = http().post(path, urlencode(BODY), content_type=FORM, HTTP_AUTHORIZATION=header)

    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize("path", ["/oauth/bc-authorize/", "/oauth/token/", "/oauth/introspect/"])
def test_our_own_endpoints_say_what_was_wrong_with_the_basic_credentials(agent, path):
    response = http().post(path, urlencode(BODY), content_type=FORM, HTTP_AUTHORIZATION=NON_ASCII_BASIC[0])

    assert_oauth_error(response, 401, "invalid_client")


def test_valid_basic_credentials_still_work_at_introspection(agent):
    response = agent.post("/oauth/introspect/", {"token": "unknown"})

    assert response.status_code == 200 and response.json() == {"active": False}


@pytest.mark.parametrize(
    "params",
    [
        {"grant_type": DEVICE_CODE},
        {"grant_type": DEVICE_CODE, "device_code": "x"},
        {"grant_type": DEVICE_CODE, "device_code": ""},
        # Advertised nowhere either: a token endpoint answers one way for every grant it does not offer.
        {"grant_type": "password", "username": "alice", "password": "x"},
    ],
    ids=["device-code-missing", "device-code-unknown", "device-code-empty", "password"],
)
def test_grants_this_server_does_not_offer_are_unsupported_grant_type(agent, params):
    response = http().post("/oauth/token/", urlencode(params), content_type=FORM, **agent.basic())

    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_the_device_grant_is_not_advertised():
    metadata = Client().get("/.well-known/openid-configuration").json()

    assert DEVICE_CODE not in metadata["grant_types_supported"]


@pytest.fixture
def automated(settings) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": AUTOMATED_SECRET}


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("name", ["token", "auth_req_id"])
def test_automated_approval_with_a_nul_in_the_token_is_invalid_request(automated, agent, approver, method, name):
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    auth_req_id = ack.json()["auth_req_id"]
    params = {name: auth_req_id + "\x00", "type": "allow", "secret": AUTOMATED_SECRET}

    if method == "get":
        response = http().get("/approvals/automated/", params)
    else:
        response = http().post("/approvals/automated/", urlencode(params), content_type=FORM)

    assert_oauth_error(response, 400, "invalid_request")
    assert "NUL" in response.json()["error_description"]
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.PENDING


# The other parameters of the same endpoints that reached a PostgreSQL query with a NUL in them (500 before).
NUL_IN_FORM = [
    ("/oauth/token/", {"grant_type": DEVICE_CODE, "device_code": "x\x00"}),
    ("/oauth/token/", {"grant_type": "authorization_code", "code": "a\x00", "redirect_uri": "https://a.example/"}),
    ("/oauth/token/", {"grant_type": "password", "username": "a\x00", "password": "b"}),
    ("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": "a\x00"}),
    ("/oauth/token/", {"grant_type": "client_credentials\x00"}),
    ("/oauth/revoke/", {"token": "a", "client_id": "x\x00"}),
    ("/oauth/revoke/", {"token": "a\x00", "token_type_hint": "refresh_token"}),
    ("/oauth/introspect/", {"token": "a", "client_id": "x\x00", "client_secret": "y"}),
    ("/oauth/introspect/", {"token": "a\x00"}),
    ("/oauth/bc-authorize/", {"scope": "openid", "login_hint": "ali\x00ce"}),
    ("/oauth/userinfo/", {"access_token": "a\x00"}),
    ("/approvals/automated/", {"token": "a", "type": "allow\x00", "secret": AUTOMATED_SECRET}),
    ("/approvals/automated/", {"token": "a", "type": "allow", "secret": AUTOMATED_SECRET + "\x00"}),
    ("/oauth/token/", {"grant_type": "refresh_token", "refresh_\x00token": "a"}),
]


@pytest.mark.parametrize(("path", "params"), NUL_IN_FORM)
def test_a_nul_in_any_form_parameter_is_invalid_request(automated, agent, path, params):
    response = http().post(path, urlencode(params), content_type=FORM, **agent.basic())

    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "raw",
    [b"token=a%00", b"token=a\x00", b"to%00ken=a", b"token=%2500&x=%00"],
    ids=["escaped", "raw-byte", "in-a-name", "after-an-escaped-percent"],
)
def test_a_nul_is_refused_however_the_body_spells_it(agent, raw):
    response = http().post("/oauth/revoke/", raw, content_type=FORM, **agent.basic())

    assert_oauth_error(response, 400, "invalid_request")


def test_an_escaped_percent_followed_by_zeros_is_not_a_nul(agent):
    # "%2500" is the three characters %00, not a NUL: such a token is merely unknown.
    response = http().post("/oauth/introspect/", b"token=%2500", content_type=FORM, **agent.basic())

    assert response.status_code == 200 and response.json() == {"active": False}


@pytest.mark.parametrize(
    "url",
    [
        "/oauth/userinfo/?access_token=%00",
        "/approvals/automated/?token=%00&type=allow",
        "/approvals/?next=%00",
        "/.well-known/openid-configuration?x=%00",
        "/oauth/register/a%00b/",
        "/approvals/l/a%00b/",
    ],
)
def test_a_nul_in_the_query_string_or_the_path_is_invalid_request(automated, url):
    response = http().get(url)

    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/oauth/userinfo/", "Bearer \u00e9"),
        ("/oauth/userinfo/", "Bearer \x00"),
        ("/oauth/register/", "Bearer \u00e9"),
        ("/oauth/register/abc/", "Bearer \x00"),
        ("/approvals/automated/?token=a&type=allow", "Bearer \u00e9\x00"),
        ("/oauth/introspect/", "Bearer \u00e9"),
    ],
)
def test_other_authorization_headers_with_non_ascii_or_nul_are_refused_cleanly(automated, path, header):
    response = http().get(path, HTTP_AUTHORIZATION=header)

    assert 400 <= response.status_code < 500, response.content


@pytest.fixture
def webpush(settings) -> None:
    prompting.configure(
        settings,
        [prompting.LOCMEM, prompting.WEBPUSH],
        WEBPUSH=prompting.webpush_config(settings, prompting.vapid_keys()),
    )


def test_a_nul_in_a_header_that_is_stored_is_invalid_request(webpush):
    """gunicorn refuses a NUL in a header value, other servers (runserver among them) pass it on: the User-Agent of
    a device enrolment is stored (approvals.devices)."""
    person = factories.make_approver("bob")
    browser = Client(raise_request_exception=False)
    browser.force_login(person.user)

    response = browser.post(
        "/approvals/devices/", json.dumps(valid_info()), content_type="application/json", HTTP_USER_AGENT="Fox\x00"
    )

    assert_oauth_error(response, 400, "invalid_request")
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize("header", ["HTTP_USER_AGENT", "HTTP_X_FORWARDED_FOR", "HTTP_AUTHORIZATION", "HTTP_X_ANY"])
def test_a_nul_in_any_header_is_invalid_request(agent, header):
    response = http().post("/oauth/token/", urlencode(BODY), content_type=FORM, **{**agent.basic(), header: "a\x00"})

    assert_oauth_error(response, 400, "invalid_request")
