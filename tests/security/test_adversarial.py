"""An adversarial review of the issue 14 fixes: the holes it found, each kept closed.

- Token exchange: copies of one approved authorization_details object are not several authorizations
  (authz.tokens.exchange._narrowed_details pairs every requested object with an approved object of its own).
- JWT access tokens: a refreshed token keeps its resource binding in `aud`, as the stored row does
  (authz.tokens.access._resources).
- jwks_uri fetches: one client holds at most one of the server's fetch slots, whatever jwks_uri it names meanwhile
  (authz.clients.keys._fetch_guarded).
- NUL in a multipart/form-data field, base64 or not, is refused before a view runs like one in a form-encoded body
  (config.middleware.RefuseNulMiddleware); a push subscription's endpoint holds only URL characters
  (approvals.devices.push_endpoint_problem), so a JSON `\\u0000` there is no 500 either.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from approvals.models import ApprovalRequest, PushSubscription
from authz.clients import keys as jose
from authz.models import AuthorizationDetailType, CibaClient
from tests import factories, prompting
from tests.authz.clients.test_private_key_jwt import private_key, public_jwk
from tests.authz.tokens.test_jwt_access_tokens import use_jwt_access_tokens
from tests.authz.tokens.test_token_exchange import BANK, PAYMENT, exchange, issue_subject_token, token_row
from tests.factories import assert_oauth_error
from tests.security.test_jwks_fetch import Scene, ask, refused, signer_for
from tests.security.test_lockouts import sign_in, signed_in

PAYMENTS = "https://payments.example/"
CIBA = "urn:openid:params:grant-type:ciba"


# --- token exchange: authorization_details only narrow, in number too -------------------------------------------------


@pytest.mark.django_db
def test_one_approved_payment_cannot_be_exchanged_for_three(agent, approver):
    """RFC 9396: each object is an authorization; three copies of the one approved payment would be three payments."""
    subject = issue_subject_token(agent, approver, details=[PAYMENT])

    response = exchange(agent, subject, ("resource", BANK), authorization_details=json.dumps([PAYMENT, PAYMENT]))

    assert_oauth_error(response, 400, "invalid_authorization_details")


@pytest.mark.django_db
def test_one_approved_object_cannot_be_split_into_several(agent, approver):
    """Two narrower objects cut from one approved object are two authorizations where one was approved."""
    subject = issue_subject_token(agent, approver, details=[PAYMENT])
    initiate, status = {**PAYMENT, "actions": ["initiate"]}, {**PAYMENT, "actions": ["status"]}

    response = exchange(agent, subject, ("resource", BANK), authorization_details=json.dumps([initiate, status]))

    assert_oauth_error(response, 400, "invalid_authorization_details")


@pytest.mark.django_db
def test_each_of_several_approved_objects_may_be_narrowed_once(agent, approver):
    second = {**PAYMENT, "instructedAmount": {"currency": "EUR", "amount": "20.00"}}
    subject = issue_subject_token(agent, approver, details=[PAYMENT, second])
    narrowed = [{**second, "actions": ["status"]}, {**PAYMENT, "actions": ["initiate"]}]

    response = exchange(agent, subject, ("resource", BANK), authorization_details=json.dumps(narrowed))

    assert response.status_code == 200, response.content
    assert response.json()["authorization_details"] == narrowed


# --- JWT access tokens: refresh keeps the resource binding ------------------------------------------------------------


@pytest.fixture
def jwt_access_tokens(settings: Any) -> Iterator[None]:
    yield from use_jwt_access_tokens(settings)


@pytest.mark.django_db
def test_a_refreshed_jwt_access_token_is_still_addressed_to_its_resource(agent, approver, jwt_access_tokens):
    """A resource server verifying offline reads `aud`: the refreshed JWT must say what the stored token says
    (RFC 8707 section 2.2: the refresh keeps the resources of the grant unless the client narrows them)."""
    approval_request = factories.make_approval_request(approver, agent, scope="openid profile")
    factories.decide(approval_request.auth_req_id)
    first = agent.post(
        "/oauth/token/", {"grant_type": CIBA, "auth_req_id": approval_request.auth_req_id, "resource": PAYMENTS}
    )
    assert first.status_code == 200, first.content

    refreshed = agent.post(
        "/oauth/token/", {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]}
    )

    assert refreshed.status_code == 200, refreshed.content
    value = refreshed.json()["access_token"]
    assert token_row(value).resource == [PAYMENTS]
    claims = jwt.decode(value, options={"verify_signature": False})
    assert claims["aud"] == [PAYMENTS]


# --- jwks_uri: one client, one fetch slot -----------------------------------------------------------------------------


@pytest.fixture
def scene(settings: Any) -> Iterator[Scene]:
    # As tests/security/test_jwks_fetch.py: held fetches end only when the test releases them.
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_TIMEOUT_SECONDS": 60}
    scene = Scene()
    yield scene
    scene.finish()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_one_client_cannot_take_every_fetch_slot_by_changing_its_jwks_uri(scene):
    """A registration update (RFC 7592) may change jwks_uri while a fetch of the old one is held: the client still
    fetches one set of keys at a time, so it cannot hold the server's few slots and starve other clients."""
    factories.make_approver("alice", email="alice@example.com")
    servers = [scene.server() for _ in range(jose.JWKS_FETCHES_AT_ONCE)]
    for server in servers:
        server.respond_with("hold")
    attacker = signer_for(servers[0])
    scene.background(lambda: ask(attacker))
    servers[0].wait_for_fetches(1)
    for server in servers[1:]:
        # What the client's PUT to its registration_client_uri writes.
        CibaClient.objects.filter(application__client_id=attacker.client_id).update(jwks_uri=server.url)
        refused(scene.background(lambda: ask(attacker)).result(), "jwks_uri")
        assert server.fetches == []

    healthy = scene.server()
    victim = signer_for(healthy)
    assert scene.background(lambda: ask(victim)).result().status_code == 200
    assert healthy.fetches == ["/jwks"]


# --- NUL in bodies that are not form-encoded --------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db
def test_nul_in_a_multipart_field_is_refused(agent, approver, settings):
    """The automated endpoint (and every view) reads request.POST, which multipart/form-data fills too."""
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": "s" * 32}
    pending = factories.make_approval_request(approver, agent)
    browser = Client(raise_request_exception=False)

    for field in ("token", "type", "secret"):
        params = {"secret": "s" * 32, "token": pending.auth_req_id, "type": "allow", field: "a\x00b"}
        response = browser.post("/approvals/automated/", params)  # the test client sends multipart/form-data
        assert_oauth_error(response, 400, "invalid_request")

    assert ApprovalRequest.objects.get(pk=pending.pk).status == ApprovalRequest.Status.PENDING


@pytest.mark.postgres
@pytest.mark.django_db
def test_nul_in_a_base64_multipart_part_is_refused(agent, approver, settings):
    """RFC 2045 Content-Transfer-Encoding: base64, which Django decodes: the NUL is in no raw byte of the body."""
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": "s" * 32}
    parts = [
        ("secret", b"s" * 32, ""),
        ("type", b"allow", ""),
        ("token", b"AA==", "Content-Transfer-Encoding: base64\r\n"),
    ]
    body = (
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="%s"\r\n%s\r\n%s\r\n'
            % (name.encode(), header.encode(), value)
            for name, value, header in parts
        )
        + b"--b--\r\n"
    )

    response = Client(raise_request_exception=False).generic(
        "POST", "/approvals/automated/", body, content_type="multipart/form-data; boundary=b"
    )

    assert_oauth_error(response, 400, "invalid_request")


def _subscription(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "keys": {"p256dh": "B" * 87, "auth": "A" * 22}}


@pytest.fixture
def webpush_devices(settings: Any) -> None:
    prompting.configure(settings, [prompting.LOCMEM, prompting.WEBPUSH])


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps(_subscription("https://fcm.googleapis.com/fcm/send/a\u0000b"))),
        # The devices view reads JSON whatever the content type says.
        ("text/plain", json.dumps(_subscription("https://fcm.googleapis.com/fcm/send/a\u0000b"))),
        # UTF-16 JSON, which json.loads reads too.
        (
            "application/json",
            json.dumps(_subscription("https://fcm.googleapis.com/fcm/send/a\u0000b")).encode("utf-16"),
        ),
    ],
    ids=["json-escape", "json-as-text", "utf-16"],
)
def test_nul_in_a_push_subscription_is_refused(approver_client, webpush_devices, content_type, body):
    """JSON bodies are their views' to check (config.middleware): a push endpoint is a URL, which has no NUL."""
    approver_client.raise_request_exception = False

    response = approver_client.post("/approvals/devices/", body, content_type=content_type)

    assert response.status_code == 400, response.content
    assert "endpoint" in response.json()["error"]
    assert not PushSubscription.objects.exists()


# --- numbers JSON has but PostgreSQL's jsonb has not ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_number_too_large_for_a_float_in_a_registered_jwks_is_invalid_client_metadata(settings):
    """1e999 is valid JSON that Python reads as infinity, which jsonb cannot store
    (authz.clients.keys.strict_json_loads)."""
    settings.REGISTRATION_MODE = "open"
    jwk = json.dumps({**public_jwk(private_key("ES256"), "k1"), "ext": 1}).replace('"ext": 1', '"ext": 1e999')
    body = (
        '{"client_name": "Overflowing agent", "backchannel_token_delivery_mode": "poll",'
        f' "token_endpoint_auth_method": "private_key_jwt", "jwks": {{"keys": [{jwk}]}}}}'
    )

    response = Client(raise_request_exception=False).post("/oauth/register/", body, content_type="application/json")

    assert_oauth_error(response, 400, "invalid_client_metadata")
    assert not CibaClient.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_number_too_large_for_a_float_in_authorization_details_is_refused(agent, approver):
    """An administrator's type whose schema leaves numbers open: the 1e999 never reaches the approval request."""
    AuthorizationDetailType.objects.create(type="tip", name="A tip", schema={"type": "object"})
    details = '[{"type": "tip", "amount": 1e999}]'

    response = agent.bc_authorize(
        scope="openid", login_hint=approver.user.get_username(), authorization_details=details
    )

    assert_oauth_error(response, 400, "invalid_authorization_details")
    assert not ApprovalRequest.objects.exists()


# --- sign-in throttle per address: an IPv6 subscriber holds a whole /64 -----------------------------------------------


@pytest.mark.django_db
def test_rotating_addresses_within_one_ipv6_64_does_not_reset_the_address_throttle(settings):
    """One subscriber is routed a /64 (2^64 addresses): counted per address, password spraying from it would never
    reach SIGN_IN_MAX_FAILURES_PER_ADDRESS (approvals.attempts.password_limits)."""
    settings.APPROVALS = {**settings.APPROVALS, "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 4}
    factories.make_approver("alice")
    for n in range(4):
        sign_in(Client(REMOTE_ADDR=f"2001:db8:1:2::{n + 1:x}"), f"someone{n}", "guess")

    sprayer = Client(REMOTE_ADDR="2001:db8:1:2:ffff::9")
    sign_in(sprayer, "alice", factories.PASSWORD)
    assert not signed_in(sprayer)
    elsewhere = Client(REMOTE_ADDR="2001:db8:1:3::1")
    sign_in(elsewhere, "alice", factories.PASSWORD)
    assert signed_in(elsewhere)


@pytest.mark.django_db
def test_an_ipv4_mapped_address_is_counted_as_its_ipv4_address(settings):
    settings.APPROVALS = {**settings.APPROVALS, "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 4}
    factories.make_approver("alice")
    for n in range(4):
        address = "192.0.2.7" if n % 2 else "::ffff:192.0.2.7"
        sign_in(Client(REMOTE_ADDR=address), f"someone{n}", "guess")

    browser = Client(REMOTE_ADDR="192.0.2.7")
    sign_in(browser, "alice", factories.PASSWORD)
    assert not signed_in(browser)


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("schema", ['{"type": "object", "maximum": 1e999}', '{"type": "object", "title": "a\\u0000b"}'])
def test_a_careless_administrators_schema_jsonb_cannot_hold_is_a_form_error(admin_client, schema):
    """The admin's JSON form fields decode with json.loads, which reads 1e999 as infinity; jsonb takes neither that
    nor NUL, so the schema is refused on the form (authz.tokens.details.schema_errors) instead of failing the save."""
    admin_client.raise_request_exception = False
    form = {
        "type": "tip",
        "name": "A tip",
        "description": "",
        "schema": schema,
        "display_template": "",
        "enabled": "on",
    }

    response = admin_client.post("/admin/authz/authorizationdetailtype/add/", form)

    assert response.status_code == 200, response.status_code
    assert "schema" in response.context["adminform"].form.errors
    assert not AuthorizationDetailType.objects.filter(type="tip").exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_create_agent_client_refuses_a_jwks_file_jsonb_cannot_hold(tmp_path):
    jwk = json.dumps({**public_jwk(private_key("ES256"), "k1"), "ext": 1}).replace('"ext": 1', '"ext": 1e999')
    path = tmp_path / "jwks.json"
    path.write_text(f'{{"keys": [{jwk}]}}')

    with pytest.raises(CommandError, match="JWK Set"):
        call_command(
            "create_agent_client",
            "--name",
            "Overflowing",
            "--auth-method",
            "private_key_jwt",
            "--jwks",
            str(path),
            stdout=io.StringIO(),
        )
    assert not CibaClient.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_multipart_body_too_large_to_read_cannot_smuggle_a_nul(agent, approver, settings):
    """Django streams a multipart body's file parts past DATA_UPLOAD_MAX_MEMORY_SIZE and still parses its fields:
    a large file part kept the middleware from reading the body, and the NUL field reached the database."""
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": "s" * 32}
    pending = factories.make_approval_request(approver, agent)
    fields = {"secret": b"s" * 32, "type": b"allow", "token": b"a\x00b"}
    body = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name.encode(), value)
        for name, value in fields.items()
    )
    body += (
        b'--b\r\nContent-Disposition: form-data; name="pad"; filename="pad.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        + b"\r\n--b--\r\n"
    )

    response = Client(raise_request_exception=False).generic(
        "POST", "/approvals/automated/", body, content_type="multipart/form-data; boundary=b"
    )

    assert_oauth_error(response, 413, "invalid_request")
    assert ApprovalRequest.objects.get(pk=pending.pk).status == ApprovalRequest.Status.PENDING
