"""Adversarial review of issue 16's reshape: the seams it moved, attacked from outside.

Findings (each test fails on the reshape as it was):
- Settings: `env_set` read "set to the empty string" as "not set" (django-environ answers None for an empty variable
  whose default is None), so `APPROVALS_PROMPT_CHANNELS=` no longer meant no channel (system check E102) but the
  console channel, which prints every approval link, a capability that decides its request, to the server's output,
  with DEBUG off and the checks passing; an empty number no longer failed at start-up either.
- Registration: client metadata with a lone surrogate (a JSON escape such as "\\ud800") reached PostgreSQL, which
  cannot store it: a 500 instead of invalid_client_metadata.

The other tests guard what held and matters: the approver's JSON endpoints now served by DRF (CSRF, content types,
format and Accept tricks, methods, a link holder's session), registration's serializers (type confusion, mass
assignment, RFC 7592 updates), the callback bound to the request, the admin, and the agent directory's marks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_application_model

from approvals import agents, links, text
from approvals.models import ApprovalRequest, Approver, PushSubscription
from authz.clients.registration import initial_access_token_create
from authz.models import CibaClient, RequestCallback
from tests import factories, prompting
from tests.conftest import CIBA

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parents[2]
REGISTER = "/oauth/register/"
DEVICES = "/approvals/devices/"
PENDING_JSON = "/approvals/pending.json"
VAPID_PUBLIC_KEY = "/approvals/devices/vapid-public-key/"
CALLBACK = "http://127.0.0.1:8765/cb"  # loopback http is allowed for fakes by tests/settings.py


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc") -> dict[str, Any]:
    return {"endpoint": endpoint, "keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": b64url(b"\x02" * 16)}}


def sent_to_sign_in(response: Any) -> bool:
    return response.status_code == 302 and "/login/" in response["Location"]


@pytest.fixture
def webpush_on(settings: Any) -> None:
    keys = prompting.vapid_keys()
    prompting.configure(
        settings, [prompting.LOCMEM, prompting.WEBPUSH], WEBPUSH=prompting.webpush_config(settings, keys)
    )


@pytest.fixture
def strict_browser(approver: Approver) -> Client:
    """The approver's own browser, with Django's CSRF check on, as a hostile page in it would meet it."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver.user)
    return browser


def csrf_token(browser: Client) -> str:
    browser.get("/approvals/user-code/")  # any page with a form sets the cookie
    token: str = browser.cookies["csrftoken"].value
    return token


# --- finding: an empty environment variable is not an unset one ------------------------------------------------------


def _settings_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPROVALS_", "WEBPUSH_", "TWILIO_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", COUNTERSIGN_VAR_DIR=str(BASE_DIR / "var"))
    return {**env, **variables}


def _read_settings(**variables: str) -> subprocess.CompletedProcess[str]:
    code = "import json, config.settings as s; print(json.dumps({'APPROVALS': s.APPROVALS, 'AUTHZ': s.AUTHZ}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=_settings_env(**variables),
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_empty_prompt_channels_variable_fails_the_checks_instead_of_printing_links() -> None:
    # The console channel writes each prompt's link to the server's output: whoever reads the logs could decide.
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "ERROR"],
        env=_settings_env(APPROVALS_PROMPT_CHANNELS=""),
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "countersign.E102" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "namespace", "path", "value"),
    [
        ("APPROVALS_PROMPT_CHANNELS", "APPROVALS", ("PROMPT_CHANNELS",), []),
        ("WEBPUSH_ALLOWED_SERVICES", "APPROVALS", ("WEBPUSH", "ALLOWED_SERVICES"), []),
        ("APPROVALS_STAFF_APPROVERS", "APPROVALS", ("STAFF_APPROVERS",), False),
        ("APPROVALS_USER_CODE_SUPPORTED", "AUTHZ", ("USER_CODE_SUPPORTED",), False),
        ("COUNTERSIGN_CLIENT_IP_HEADER", "APPROVALS", ("CLIENT_IP_HEADER",), ""),
    ],
)
def test_a_variable_set_to_the_empty_string_is_read_as_set(
    variable: str, namespace: str, path: tuple[str, ...], value: Any
) -> None:
    result = _read_settings(**{variable: ""})
    assert result.returncode == 0, result.stderr
    found: Any = json.loads(result.stdout.splitlines()[-1])[namespace]
    for key in path:
        assert key in found, (variable, found)
        found = found[key]
    assert found == value


@pytest.mark.parametrize(
    "variable", ["APPROVALS_MAX_PENDING_PER_PERSON", "APPROVALS_MAX_REQUEST_BYTES", "APPROVALS_PROMPT_TIMEOUT_SECONDS"]
)
def test_an_empty_number_still_fails_at_start_up(variable: str) -> None:
    result = _read_settings(**{variable: ""})
    assert result.returncode != 0
    assert "ValueError" in result.stderr


def test_guard_unset_variables_are_left_to_the_apps_defaults() -> None:
    result = _read_settings()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"APPROVALS": {"TWILIO": {}, "WEBPUSH": {}}, "AUTHZ": {}}


# --- finding: registration metadata PostgreSQL cannot store ----------------------------------------------------------


def _jwks(**member: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": "agent-1", "use": "sig", "alg": "ES256", **member}]}


def poll_client(**overrides: Any) -> dict[str, Any]:
    return {"client_name": "Expense bot", "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll", **overrides}


def rows() -> tuple[int, int, int]:
    return (
        get_application_model().objects.count(),
        CibaClient.objects.count(),
        get_access_token_model().objects.count(),
    )


@pytest.fixture
def register(settings: Any) -> Any:
    token = initial_access_token_create(expires_in=3600)
    http = Client(raise_request_exception=False)

    def post(metadata: Any) -> Any:
        body = json.dumps(metadata)
        return http.post(REGISTER, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")

    return post


def assert_invalid_metadata(response: Any, error: str = "invalid_client_metadata") -> dict[str, Any]:
    assert response.status_code == 400, response.content
    assert response["Content-Type"].split(";")[0] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    return body


LONE_SURROGATES = [
    pytest.param(poll_client(authorization_details_types=["\ud800"]), id="authorization_details_types"),
    pytest.param(
        poll_client(token_endpoint_auth_method="private_key_jwt", jwks=_jwks(note="\udfff")), id="jwks member value"
    ),
    pytest.param(poll_client(token_endpoint_auth_method="private_key_jwt", jwks=_jwks(kid="\ud83d")), id="jwks kid"),
    pytest.param(
        poll_client(token_endpoint_auth_method="private_key_jwt", jwks={**_jwks(), "\ud800": 1}), id="jwks member name"
    ),
]


@pytest.mark.parametrize("metadata", LONE_SURROGATES)
def test_registration_refuses_text_that_is_not_unicode(register: Any, metadata: dict[str, Any]) -> None:
    before = rows()
    assert_invalid_metadata(register(metadata))
    assert rows() == before


@pytest.mark.parametrize("metadata", LONE_SURROGATES)
def test_an_update_refuses_text_that_is_not_unicode(register: Any, metadata: dict[str, Any]) -> None:
    registered = register(poll_client()).json()
    uri = registered["registration_client_uri"].removeprefix("http://testserver")
    response = Client(raise_request_exception=False).put(
        uri,
        json.dumps({**metadata, "client_id": registered["client_id"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['registration_access_token']}",
    )
    assert_invalid_metadata(response)
    assert CibaClient.objects.get(application__client_id=registered["client_id"]).authorization_details_types == []


# --- guards: the approver's JSON endpoints, served by DRF ------------------------------------------------------------


def test_guard_removing_a_device_needs_the_csrf_token(webpush_on: None, approver: Approver, strict_browser: Client):
    device = PushSubscription.objects.create(
        approver=approver, endpoint="https://fcm.googleapis.com/fcm/send/x", p256dh="p", auth="a"
    )
    remove = f"/approvals/devices/{device.pk}/remove/"

    refused = strict_browser.post(remove)
    assert refused.status_code == 403 and refused["Cache-Control"] == "no-store"
    assert PushSubscription.objects.filter(pk=device.pk).exists()

    token = csrf_token(strict_browser)
    assert strict_browser.post(remove, HTTP_X_CSRFTOKEN=token).status_code == 204
    assert not PushSubscription.objects.filter(pk=device.pk).exists()


def test_guard_another_origin_cannot_enrol_even_with_the_token(webpush_on: None, strict_browser: Client):
    token = csrf_token(strict_browser)
    response = strict_browser.post(
        DEVICES,
        json.dumps(subscription()),
        content_type="application/json",
        secure=True,
        HTTP_X_CSRFTOKEN=token,
        HTTP_ORIGIN="https://evil.example",
    )
    assert response.status_code == 403
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", json.dumps(subscription())),  # what a cross-site form or a no-CORS fetch can send
        ("application/x-www-form-urlencoded", "endpoint=https%3A%2F%2Ffcm.googleapis.com%2Fx&keys=1"),
    ],
)
def test_guard_a_hostile_page_cannot_enrol_a_device(
    webpush_on: None, strict_browser: Client, content_type: str, body: str
) -> None:
    response = strict_browser.post(DEVICES, body, content_type=content_type)
    assert response.status_code == 403
    assert not PushSubscription.objects.exists()


def test_guard_form_and_multipart_bodies_are_refused_without_a_500(webpush_on: None, strict_browser: Client) -> None:
    token = csrf_token(strict_browser)
    multipart = strict_browser.post(DEVICES, {"csrfmiddlewaretoken": token, **subscription(), "keys": "x"})
    form = strict_browser.post(
        DEVICES, f"csrfmiddlewaretoken={token}&endpoint=x", content_type="application/x-www-form-urlencoded"
    )
    for response in (multipart, form):
        assert response.status_code == 400, response.content
        assert set(response.json()) == {"error"}
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize("path", [DEVICES, PENDING_JSON, VAPID_PUBLIC_KEY])
@pytest.mark.parametrize("trick", [{"QUERY_STRING": "format=api"}, {"HTTP_ACCEPT": "text/html"}])
def test_guard_no_browsable_api_whatever_is_asked(
    webpush_on: None, approver_client: Client, path: str, trick: dict[str, str]
) -> None:
    response = approver_client.get(path, **trick)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    json.loads(response.content)


@pytest.mark.parametrize("path", [DEVICES, PENDING_JSON, VAPID_PUBLIC_KEY, "/approvals/devices/1/remove/"])
@pytest.mark.parametrize("method", ["options", "head", "put", "patch", "delete"])
def test_guard_other_methods_are_405_and_describe_nothing(
    webpush_on: None, approver_client: Client, path: str, method: str
) -> None:
    response = getattr(approver_client, method)(path)
    assert response.status_code == 405
    assert response["Cache-Control"] == "no-store"
    if method != "head":
        assert set(response.json()) == {"error"}  # no DRF metadata: names, descriptions, parsers, renderers


def test_guard_a_hostile_device_id_is_404(webpush_on: None, approver_client: Client) -> None:
    for pk in ("99999999999999999999999", "0"):
        response = approver_client.post(f"/approvals/devices/{pk}/remove/")
        assert response.status_code == 404
        assert response.json() == {"error": "Not found."}


def test_guard_an_opened_link_is_no_sign_in_for_the_json_endpoints(webpush_on: None, agent, approver) -> None:
    approval_request = factories.make_approval_request(approver, agent, binding_message="Order 4711")
    PushSubscription.objects.create(approver=approver, endpoint="https://fcm.googleapis.com/fcm/send/y", p256dh="p")
    holder = Client()
    assert holder.get(links.link_url(approval_request).removeprefix("http://testserver")).status_code == 302

    assert sent_to_sign_in(holder.get(PENDING_JSON))
    assert sent_to_sign_in(holder.get(DEVICES))
    assert sent_to_sign_in(holder.post(DEVICES, json.dumps(subscription()), content_type="application/json"))
    device = PushSubscription.objects.get()
    assert sent_to_sign_in(holder.post(f"/approvals/devices/{device.pk}/remove/"))
    assert PushSubscription.objects.count() == 1


# --- guards: registration through DRF serializers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("client_name", 7),
        ("client_name", ["Expense bot"]),
        ("client_name", {"en": "Expense bot"}),
        ("client_name", True),
        ("backchannel_token_delivery_mode", 1),
        ("backchannel_token_delivery_mode", ["poll"]),
        ("token_endpoint_auth_method", False),
        ("scope", ["openid"]),
        ("client_uri", 1),
        ("grant_types", CIBA),
        ("grant_types", [CIBA, 1]),
        ("grant_types", {"0": CIBA}),
        ("authorization_details_types", [None]),
        ("backchannel_user_code_parameter", "true"),
        ("backchannel_user_code_parameter", 1),
        ("backchannel_user_code_parameter", None),
        ("jwks", []),
        ("jwks", "{}"),
        ("id_token_signed_response_alg", 256),
    ],
)
def test_guard_registration_takes_json_types_as_rfc_7591_gives_them(register: Any, member: str, value: Any) -> None:
    before = rows()
    body = assert_invalid_metadata(register(poll_client(**{member: value})))
    assert member in body["error_description"]
    assert rows() == before


def test_guard_registration_writes_only_what_a_client_may_choose(register: Any) -> None:
    chosen = {
        "client_id": "chosen-id",
        "client_secret": "chosen-secret-" + "x" * 40,
        "registration_access_token": "chosen-token",
        "client_id_issued_at": 0,
        "website_verified": True,
        "ciba_enabled": False,
        "admin_limits": {"allowed_scopes": "introspection"},
        "allowed_scopes": "introspection",
        "prompt_channels": "sms",
        "refresh_tokens": True,
        "website": "https://bank.example",
        "name": "Countersign",
        "skip_authorization": True,
        "client_type": "public",
        "authorization_grant_type": "password",
        "algorithm": "HS256",
        "user": 1,
    }
    response = register(poll_client(**chosen))
    assert response.status_code == 201, response.content
    body = response.json()
    application = get_application_model().objects.get(client_id=body["client_id"])
    ciba = CibaClient.objects.get(application=application)

    assert body["client_id"] != "chosen-id" and body["client_secret"] != chosen["client_secret"]
    assert body["registration_access_token"] != "chosen-token"
    assert (application.name, application.skip_authorization, application.client_type) == (
        "Expense bot",
        False,
        application.CLIENT_CONFIDENTIAL,
    )
    assert (application.authorization_grant_type, application.algorithm, application.user_id) == (
        application.GRANT_CLIENT_CREDENTIALS,
        application.RS256_ALGORITHM,
        None,
    )
    assert not ciba.website_verified and ciba.ciba_enabled and not ciba.admin_limits
    assert "introspection" not in ciba.allowed_scopes.split()
    assert (ciba.prompt_channels, ciba.refresh_tokens, ciba.website) == ("", False, "")


UPDATE_IDENTITY = {
    "client_id null": lambda reg: {"client_id": None},
    "client_id in a list": lambda reg: {"client_id": [reg["client_id"]]},
    "client_id in an object": lambda reg: {"client_id": {"id": reg["client_id"]}},
    "client_secret null": lambda reg: {"client_secret": None},
    "client_secret in a list": lambda reg: {"client_secret": [reg["client_secret"]]},
    "client_secret a number": lambda reg: {"client_secret": 0},
    "client_secret chosen": lambda reg: {"client_secret": "chosen-" + "x" * 40},
}


@pytest.mark.parametrize("change", UPDATE_IDENTITY.values(), ids=UPDATE_IDENTITY.keys())
def test_guard_an_update_names_its_client_and_keeps_its_secret(register: Any, change: Any) -> None:
    registered = register(poll_client()).json()
    uri = registered["registration_client_uri"].removeprefix("http://testserver")
    response = Client().put(
        uri,
        json.dumps({**poll_client(client_name="Renamed"), "client_id": registered["client_id"], **change(registered)}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['registration_access_token']}",
    )
    assert_invalid_metadata(response)
    assert get_application_model().objects.get(client_id=registered["client_id"]).name == "Expense bot"


def test_guard_an_update_cannot_keep_or_claim_the_verified_mark_for_another_name(register: Any) -> None:
    registered = register(poll_client(client_uri="https://expenses.example")).json()
    CibaClient.objects.filter(application__client_id=registered["client_id"]).update(website_verified=True)
    uri = registered["registration_client_uri"].removeprefix("http://testserver")
    response = Client().put(
        uri,
        json.dumps(
            {
                **poll_client(client_name="Payroll", client_uri="https://expenses.example", website_verified=True),
                "client_id": registered["client_id"],
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['registration_access_token']}",
    )
    assert response.status_code == 200, response.content
    assert not CibaClient.objects.get(application__client_id=registered["client_id"]).website_verified


# --- guards: the callback bound to the request, and who sees it -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "bound"),
    [("poll", False), ("ping", True), ("push", True)],
)
def test_guard_bc_authorize_binds_a_callback_exactly_for_ping_and_push(make_agent, approver, mode, bound) -> None:
    endpoint = CALLBACK if mode != "poll" else ""
    agent = make_agent(
        name=f"{mode} agent", backchannel_token_delivery_mode=mode, backchannel_client_notification_endpoint=endpoint
    )
    ack = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token="agent-token-1234")
    assert ack.status_code == 200, ack.content
    approval_request = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    callback = RequestCallback.objects.filter(request=approval_request).first()
    assert (callback is not None) == bound
    if callback is not None:
        assert (callback.mode, callback.endpoint, callback.token) == (mode, CALLBACK, "agent-token-1234")


def test_guard_the_admin_cannot_be_made_to_filter_by_a_callback_token(make_agent, approver, admin_client) -> None:
    agent = make_agent(backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=CALLBACK)
    ack = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token="secret-token-abcdef")
    assert ack.status_code == 200, ack.content
    listing = "/admin/approvals/approvalrequest/"
    # A filter that answers yes or no would let the token be read one character at a time.
    for lookup in ("callback__token__startswith=s", "callback__token=secret-token-abcdef"):
        assert admin_client.get(f"{listing}?{lookup}").status_code == 400
    page = admin_client.get(f"{listing}{ApprovalRequest.objects.get().pk}/change/").content.decode()
    assert "secret-token-abcdef" not in page


# --- guards: the agent directory's marks -----------------------------------------------------------------------------


def test_guard_without_a_directory_a_self_registered_agent_is_unverified(register: Any) -> None:
    registered = register(poll_client(client_uri="https://expenses.example")).json()
    application = get_application_model().objects.get(client_id=registered["client_id"])
    CibaClient.objects.filter(application=application).update(website_verified=True)
    # What approvals falls back to when no directory answers: nothing verified.
    assert text.client_unverified(application, agents.AgentProfile())
    assert text.agent_label(application, agents.AgentProfile()) == "(unverified) Expense bot"
    assert not text.client_unverified(application)  # the registered directory knows better


def test_guard_an_unverified_agents_website_is_not_shown(register: Any, approver, approver_client: Client) -> None:
    registered = register(poll_client(client_name="Expense bot", client_uri="https://expenses.example")).json()
    application = get_application_model().objects.get(client_id=registered["client_id"])
    approval_request = factories.make_approval_request(approver, type("A", (), {"application": application})())
    page = approver_client.get(f"/approvals/{approval_request.pk}/").content.decode()
    assert "Unverified agent:" in page
    assert "expenses.example" not in page
