"""The management commands that register agents and approvers, and the demo bootstrap."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command
from django.test import Client
from jwt.algorithms import ECAlgorithm
from oauth2_provider.models import get_application_model

from approvals.models import Approver
from approvals.phones import normalize_e164
from authz.models import CibaClient
from tests import factories
from tests.authz.clients.test_private_key_jwt import Signer
from tests.conftest import CIBA, FORM, Agent

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def agent_from(credentials: dict) -> Agent:
    application = get_application_model().objects.get(client_id=credentials["client_id"])
    return Agent(credentials["client_id"], credentials["client_secret"], Client(), application)


# --- create_agent_client ----------------------------------------------------------------------------------------------


def test_create_agent_client_prints_working_credentials(approver):
    credentials = run("create_agent_client", "--name", "Expense bot")

    assert credentials["client_id"] and credentials["client_secret"]
    assert credentials["name"] == "Expense bot"
    assert credentials["token_endpoint_auth_method"] == "client_secret_basic"
    assert credentials["backchannel_token_delivery_mode"] == "poll"
    assert credentials["backchannel_user_code_parameter"] is False
    application = get_application_model().objects.get(client_id=credentials["client_id"])
    assert application.client_type == "confidential"
    assert application.client_secret.startswith("countersign_sha256$")
    assert credentials["client_secret"] not in application.client_secret

    agent = agent_from(credentials)
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    assert ack.status_code == 200, ack.content
    assert agent.poll(ack.json()["auth_req_id"]).json()["error"] == "authorization_pending"


def test_create_agent_client_defaults(db):
    credentials = run("create_agent_client", "--name", "Defaults")
    ciba = CibaClient.objects.get(application__client_id=credentials["client_id"])
    assert ciba.ciba_enabled is True
    assert ciba.token_endpoint_auth_method == "client_secret_basic"
    assert ciba.backchannel_token_delivery_mode == "poll"
    assert ciba.backchannel_user_code_parameter is False
    assert ciba.refresh_tokens is True
    assert ciba.allowed_scopes == ""


def test_create_agent_client_stores_its_options(db):
    credentials = run(
        "create_agent_client",
        "--name",
        "Configured",
        "--auth-method",
        "client_secret_post",
        "--scopes",
        "openid   profile  email",
        "--user-code",
        "--no-refresh-tokens",
    )
    assert credentials["token_endpoint_auth_method"] == "client_secret_post"
    assert credentials["backchannel_user_code_parameter"] is True
    ciba = CibaClient.objects.get(application__client_id=credentials["client_id"])
    assert ciba.token_endpoint_auth_method == "client_secret_post"
    assert ciba.allowed_scopes == "openid profile email"
    assert ciba.backchannel_user_code_parameter is True
    assert ciba.refresh_tokens is False


def test_create_agent_client_secret_post_authenticates_in_the_body(approver):
    credentials = run("create_agent_client", "--name", "Poster", "--auth-method", "client_secret_post")
    body = {"client_id": credentials["client_id"], "client_secret": credentials["client_secret"]}
    ack = Client().post(
        "/oauth/bc-authorize/", urlencode({**body, "scope": "openid", "login_hint": "alice"}), content_type=FORM
    )
    assert ack.status_code == 200, ack.content
    # Registered for client_secret_post: the same credentials over Basic are refused.
    assert agent_from(credentials).bc_authorize(scope="openid", login_hint="alice").status_code == 401


def test_create_agent_client_scopes_limit_what_it_may_ask_for(approver):
    agent = agent_from(run("create_agent_client", "--name", "Narrow", "--scopes", "openid profile"))
    assert agent.bc_authorize(scope="openid profile", login_hint="alice").status_code == 200
    refused = agent.bc_authorize(scope="openid email", login_hint="alice")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"


def test_create_agent_client_fixed_client_id(db):
    credentials = run("create_agent_client", "--name", "Fixed", "--client-id", "my-agent")
    assert credentials["client_id"] == "my-agent"
    with pytest.raises(CommandError, match="exists already"):
        run("create_agent_client", "--name", "Again", "--client-id", "my-agent")
    assert get_application_model().objects.filter(client_id="my-agent").count() == 1


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_create_agent_client_ping_and_push_need_a_notification_endpoint(db, mode):
    with pytest.raises(CommandError, match="--notification-endpoint"):
        run("create_agent_client", "--name", "Pinger", "--delivery-mode", mode)
    assert not get_application_model().objects.exists()


@pytest.mark.parametrize("mode", ["ping", "push"])
@pytest.mark.parametrize(
    "endpoint", ["http://agent.example.com/cb", "https://10.0.0.7/cb", "https://169.254.169.254/latest/meta-data/"]
)
def test_create_agent_client_refuses_notification_endpoints_off_limits(db, settings, mode, endpoint):
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": False}
    with pytest.raises(CommandError, match="not allowed"):
        run("create_agent_client", "--name", "Pinger", "--delivery-mode", mode, "--notification-endpoint", endpoint)
    assert not get_application_model().objects.exists()


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_create_agent_client_registers_ping_and_push_clients(db, mode):
    printed = run(
        "create_agent_client", "--name", "Pinger", "--delivery-mode", mode,
        "--notification-endpoint", "http://127.0.0.1:9/cb",  # loopback http: allowed by the test settings
    )  # fmt: skip

    assert printed["backchannel_token_delivery_mode"] == mode
    assert printed["backchannel_client_notification_endpoint"] == "http://127.0.0.1:9/cb"


def _public_jwks(tmp_path, *, private: bool = False) -> tuple[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key if private else key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    return str(path), key


def test_create_agent_client_registers_a_private_key_jwt_client(tmp_path, approver):
    jwks_file, key = _public_jwks(tmp_path)
    printed = run(
        "create_agent_client", "--name", "Signer", "--auth-method", "private_key_jwt", "--jwks", jwks_file,
        "--signing-alg", "ES256", "--client-credentials",
    )  # fmt: skip

    assert "client_secret" not in printed
    assert printed["token_endpoint_auth_method"] == "private_key_jwt"
    assert printed["token_endpoint_auth_signing_alg"] == "ES256"
    assert printed["client_credentials_enabled"] is True
    ciba = CibaClient.objects.get(application__client_id=printed["client_id"])
    assert ciba.jwks["keys"][0]["kid"] == "k1" and ciba.client_credentials_enabled

    # The printed client works with an assertion signed by the private half.
    signer = Signer(printed["client_id"], "ES256", key, "k1")
    assert signer.bc_authorize().status_code == 200
    assert (
        signer.post("/oauth/token/", signer.params(grant_type="client_credentials", scope="openid")).status_code == 200
    )


def test_create_agent_client_accepts_a_jwks_uri(db):
    printed = run(
        "create_agent_client", "--name", "Remote keys", "--auth-method", "private_key_jwt",
        "--jwks-uri", "http://127.0.0.1:9/jwks",  # loopback http: allowed by the test settings
    )  # fmt: skip
    assert printed["jwks_uri"] == "http://127.0.0.1:9/jwks"
    assert "client_secret" not in printed


def test_create_agent_client_refuses_private_key_jwt_without_keys(db):
    with pytest.raises(CommandError, match="--jwks"):
        run("create_agent_client", "--name", "Signer", "--auth-method", "private_key_jwt")
    assert not get_application_model().objects.exists()


def test_create_agent_client_refuses_private_keys(tmp_path, db):
    jwks_file, _key = _public_jwks(tmp_path, private=True)
    with pytest.raises(CommandError, match="private"):
        run("create_agent_client", "--name", "Leaky", "--auth-method", "private_key_jwt", "--jwks", jwks_file)
    assert not get_application_model().objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--jwks-uri", "https://10.0.0.7/jwks"],
        ["--jwks-uri", "http://127.0.0.1:9/jwks", "--jwks", "x.json"],
        ["--jwks", "/no/such/file.json"],
    ],
)
def test_create_agent_client_refuses_bad_key_locations(db, settings, args):
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": False}
    with pytest.raises(CommandError):
        run("create_agent_client", "--name", "Signer", "--auth-method", "private_key_jwt", *args)
    assert not get_application_model().objects.exists()


def test_create_agent_client_signing_alg_is_for_private_key_jwt(db):
    with pytest.raises(CommandError, match="--signing-alg"):
        run("create_agent_client", "--name", "Secret", "--signing-alg", "ES256")


def test_create_agent_client_fapi_rules_apply(tmp_path, db):
    jwks_file, _key = _public_jwks(tmp_path)
    with pytest.raises(CommandError, match="FAPI"):
        run("create_agent_client", "--name", "Bank", "--fapi", "--jwks", jwks_file, "--request-signing-alg", "PS256")
    assert not get_application_model().objects.exists()
    printed = run(
        "create_agent_client", "--name", "Bank", "--fapi", "--auth-method", "private_key_jwt", "--jwks", jwks_file,
        "--request-signing-alg", "ES256",
    )  # fmt: skip
    assert printed["fapi_ciba"] is True
    assert printed["backchannel_authentication_request_signing_alg"] == "ES256"


def test_create_agent_client_client_credentials_flag(db):
    printed = run("create_agent_client", "--name", "Self", "--client-credentials")
    agent = agent_from(printed)
    assert agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"}).status_code == 200
    plain = agent_from(run("create_agent_client", "--name", "Plain"))
    refused = plain.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})
    assert refused.json()["error"] == "unauthorized_client"


def test_create_agent_client_no_ciba_makes_a_client_that_only_introspects(agent, approver):
    printed = run("create_agent_client", "--name", "Payments API", "--no-ciba")
    assert printed["ciba_enabled"] is False
    assert printed["resource_server"] is True and printed["resources"] == []
    resource_server = agent_from(printed)

    refused = resource_server.bc_authorize(scope="openid", login_hint="alice")
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    approval_request = factories.make_approval_request(approver, agent)
    factories.decide(approval_request.auth_req_id)
    access_token = agent.poll(approval_request.auth_req_id).json()["access_token"]
    introspected = resource_server.post("/oauth/introspect/", {"token": access_token})
    assert introspected.status_code == 200 and introspected.json()["active"] is True


def test_create_agent_client_refuses_a_notification_endpoint_for_poll(db):
    with pytest.raises(CommandError):
        run("create_agent_client", "--name", "Poller", "--notification-endpoint", "https://agent.example.com/cb")
    assert not get_application_model().objects.exists()


def test_create_agent_client_stores_its_prompt_channel_order(db, settings):
    settings.APPROVALS = {
        **settings.APPROVALS,
        "PROMPT_CHANNELS": ["approvals.channels.locmem.LocmemChannel", "approvals.channels.console.ConsoleChannel"],
    }

    printed = run("create_agent_client", "--name", "Careful", "--prompt-channels", "console, locmem")

    assert printed["prompt_channels"] == ["console", "locmem"]
    assert CibaClient.objects.get(application__client_id=printed["client_id"]).prompt_channels == "console,locmem"


def test_create_agent_client_refuses_unconfigured_prompt_channels(db):
    with pytest.raises(CommandError, match="not configured on this server: sms"):
        call_command("create_agent_client", "--name", "Loud", "--prompt-channels", "sms", stdout=StringIO())
    assert not get_application_model().objects.filter(name="Loud").exists()


def test_create_agent_client_requires_a_name(db):
    with pytest.raises(CommandError):
        run("create_agent_client")


# --- create_approver --------------------------------------------------------------------------------------------------


def test_create_approver_prints_the_approver(db):
    result = run(
        "create_approver", "alice", "--password", "P", "--email", "alice@example.com", "--phone", "+14155550123"
    )

    user = get_user_model().objects.get(username="alice")
    assert result == {
        "id": user.pk,
        "username": "alice",
        "email": "alice@example.com",
        "phone_number": "+14155550123",
        "user_code_set": False,
        "created": True,
    }
    assert user.check_password("P")
    assert user.approver.phone_number == "+14155550123"
    assert user.approver.accepting_requests is True


@pytest.mark.parametrize(
    "given", ["+1 415 555 0123", "+1 (415) 555-0123", "+1-415-555-0123", "+14155550123", " +1 415 555 0123 "]
)
def test_create_approver_normalizes_the_phone_to_e164(db, given):
    result = run("create_approver", "alice", "--password", "P", "--phone", given)
    assert result["phone_number"] == "+14155550123"
    assert Approver.objects.get(user__username="alice").phone_number == "+14155550123"


def test_create_approver_phone_can_be_used_as_login_hint(make_agent):
    run("create_approver", "alice", "--password", "P", "--phone", "+44 20 7946 0958")
    agent = make_agent()
    ack = agent.bc_authorize(scope="openid", login_hint="+442079460958")
    assert ack.status_code == 200, ack.content


@pytest.mark.parametrize("phone", ["12345", "not a phone", "4155550123", "+1 415 555", "+999 1234"])
def test_create_approver_refuses_an_invalid_phone(db, phone):
    with pytest.raises(CommandError, match="phone"):
        run("create_approver", "alice", "--password", "P", "--phone", phone)
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.parametrize("email", ["not-an-email", "alice@", "@example.com", "alice example.com"])
def test_create_approver_refuses_an_invalid_email(db, email):
    with pytest.raises(CommandError, match="email"):
        run("create_approver", "alice", "--password", "P", "--email", email)
    assert not get_user_model().objects.filter(username="alice").exists()


def test_create_approver_again_updates_the_same_user(db):
    first = run("create_approver", "alice", "--password", "P1", "--email", "a@example.com", "--phone", "+14155550123")
    second = run("create_approver", "alice", "--password", "P2", "--email", "alice@example.com")

    assert second["created"] is False
    assert second["id"] == first["id"]
    assert second["email"] == "alice@example.com"
    # Not given the second time: kept.
    assert second["phone_number"] == "+14155550123"
    User = get_user_model()
    assert User.objects.filter(username="alice").count() == 1
    assert Approver.objects.filter(user__username="alice").count() == 1
    user = User.objects.get(username="alice")
    assert user.check_password("P2") and not user.check_password("P1")

    third = run("create_approver", "alice", "--password", "P3", "--phone", "+1 415 555 0199")
    assert third["phone_number"] == "+14155550199"
    assert third["email"] == "alice@example.com"


def test_a_new_phone_number_enables_sms_again(db):
    run("create_approver", "alice", "--password", "P1", "--phone", "+14155550123")
    Approver.objects.filter(user__username="alice").update(
        phone_disabled_at="2026-01-01T00:00Z", phone_disabled_reason="x"
    )

    run("create_approver", "alice", "--password", "P1", "--phone", "+14155550199")

    approver = Approver.objects.get(user__username="alice")
    assert (approver.phone_number, approver.phone_disabled_at, approver.phone_disabled_reason) == (
        "+14155550199",
        None,
        "",
    )


def test_create_approver_sets_a_hashed_user_code(db):
    result = run("create_approver", "alice", "--password", "P", "--user-code", "2468")
    assert result["user_code_set"] is True
    approver = Approver.objects.get(user__username="alice")
    assert approver.user_code_hash and "2468" not in approver.user_code_hash
    assert check_password("2468", approver.user_code_hash)


def test_create_approver_user_code_is_checked_at_bc_authorize(make_agent):
    run("create_approver", "alice", "--password", "P", "--user-code", "2468")
    agent = make_agent(backchannel_user_code_parameter=True)
    assert agent.bc_authorize(scope="openid", login_hint="alice", user_code="2468").status_code == 200
    wrong = agent.bc_authorize(scope="openid", login_hint="alice", user_code="1357")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_user_code"


# --- bootstrap_demo ---------------------------------------------------------------------------------------------------


def test_bootstrap_demo_credentials_work_for_a_full_approval(outbox, django_capture_on_commit_callbacks):
    credentials = run("bootstrap_demo", "--json")
    agent = agent_from(credentials["agent"])
    approver = credentials["approver"]
    assert approver["username"] == "demo"

    with django_capture_on_commit_callbacks(execute=True):
        ack = agent.bc_authorize(scope="openid profile", login_hint="demo", binding_message="Order 4711")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    assert agent.poll(auth_req_id).json()["error"] == "authorization_pending"

    # The demo person signs in with the printed password, through the real login form, and approves.
    (prompt,) = outbox
    path = prompt.link.removeprefix("http://testserver")
    browser = Client()
    login = browser.post(
        "/accounts/login/", {"username": approver["username"], "password": approver["password"], "next": path}
    )
    assert login.status_code == 302 and login["Location"] == path
    assert browser.post(f"/approvals/{prompt.approval_request_id}/decide/", {"decision": "approve"}).status_code == 302

    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["access_token"] and tokens.json()["id_token"]


def test_bootstrap_demo_twice_rotates_the_secret_and_password(db):
    first = run("bootstrap_demo", "--json")
    second = run("bootstrap_demo", "--json")

    assert first["agent"]["client_id"] == second["agent"]["client_id"] == "demo-agent"
    assert first["agent"]["client_secret"] != second["agent"]["client_secret"]
    assert get_application_model().objects.filter(client_id="demo-agent").count() == 1
    assert get_user_model().objects.filter(username="demo").count() == 1
    assert CibaClient.objects.filter(application__client_id="demo-agent").count() == 1

    old, new = agent_from(first["agent"]), agent_from(second["agent"])
    refused = old.bc_authorize(scope="openid", login_hint="demo")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert new.bc_authorize(scope="openid", login_hint="demo").status_code == 200

    user = get_user_model().objects.get(username="demo")
    assert user.check_password(second["approver"]["password"])
    assert not user.check_password(first["approver"]["password"])


def test_bootstrap_demo_stores_a_valid_e164_phone_number(make_agent):
    run("bootstrap_demo", "--json")
    phone = Approver.objects.get(user__username="demo").phone_number
    assert normalize_e164(phone) == phone
    # The demo approver can be named by phone, like any approver.
    agent = make_agent()
    assert agent.bc_authorize(scope="openid", login_hint=phone).status_code == 200


def test_bootstrap_demo_prints_instructions(db):
    out = StringIO()
    call_command("bootstrap_demo", "--base-url", "https://demo.example.com/", stdout=out)
    text = out.getvalue()
    secret_line = next(line for line in text.splitlines() if "client_secret:" in line)
    secret = secret_line.split("client_secret:")[1].strip()
    assert "https://demo.example.com/oauth/bc-authorize/" in text
    assert "https://demo.example.com/oauth/token/" in text
    assert f"grant_type={CIBA}" in text
    demo = agent_from({"client_id": "demo-agent", "client_secret": secret})
    assert demo.bc_authorize(scope="openid", login_hint="demo").status_code == 200
