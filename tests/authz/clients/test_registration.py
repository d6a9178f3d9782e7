"""Dynamic client registration (RFC 7591) and client configuration (RFC 7592) of CIBA agents at /oauth/register/."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from authz.clients.registration import initial_access_token_create
from authz.models import AuthorizationDetailType, CibaClient
from tests import factories
from tests.conftest import CIBA, Agent

pytestmark = pytest.mark.django_db

REGISTER = "/oauth/register/"
CALLBACK = "http://127.0.0.1:8765/cb"  # loopback http is allowed for fakes by tests/settings.py


def public_jwks() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": "agent-1", "use": "sig", "alg": "ES256"}]}


def rows() -> tuple[int, int, int]:
    return (
        get_application_model().objects.count(),
        CibaClient.objects.count(),
        get_access_token_model().objects.count(),
    )


@pytest.fixture
def initial_token() -> str:
    return initial_access_token_create(expires_in=3600)


@pytest.fixture
def register(client: Client, initial_token: str) -> Callable[..., Any]:
    def post(metadata: Any, *, token: str | None = None, raw: bytes | None = None, **extra: Any) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token or initial_token}", **extra}
        body = raw if raw is not None else json.dumps(metadata)
        return client.post(REGISTER, body, content_type="application/json", **headers)

    return post


def poll_client(**overrides: Any) -> dict[str, Any]:
    return {
        "client_name": "Expense bot",
        "grant_types": [CIBA, "refresh_token"],
        "backchannel_token_delivery_mode": "poll",
        "scope": "openid profile",
        **overrides,
    }


def assert_registration_error(response: Any, error: str, mentions: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error, body
    assert mentions in body["error_description"], body
    assert response["Cache-Control"] == "no-store"
    return body["error_description"]


# --- registration -----------------------------------------------------------------------------------------------------


def test_poll_client_registers_with_secret_shown_once(register):
    response = register(poll_client(client_uri="https://expenses.example.com"))

    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["client_name"] == "Expense bot"
    assert body["grant_types"] == [CIBA, "refresh_token"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["backchannel_token_delivery_mode"] == "poll"
    assert body["backchannel_user_code_parameter"] is False
    assert body["scope"] == "openid profile"
    assert body["client_uri"] == "https://expenses.example.com"
    assert body["client_secret_expires_at"] == 0
    assert body["registration_client_uri"] == f"http://testserver/oauth/register/{body['client_id']}/"
    assert "backchannel_client_notification_endpoint" not in body

    application = get_application_model().objects.get(client_id=body["client_id"])
    assert application.client_type == "confidential"
    assert application.registration_source == "dcr"
    # DOT stores the secret hashed; the response was the only place to read it.
    assert application.client_secret != body["client_secret"]
    assert application.client_secret.startswith("countersign_sha256$")
    ciba = application.ciba
    assert ciba.backchannel_token_delivery_mode == "poll"
    assert ciba.refresh_tokens is True
    assert ciba.client_credentials_enabled is False
    assert ciba.token_exchange_enabled is False
    assert ciba.allowed_scopes == "openid profile"
    assert ciba.website == "https://expenses.example.com"
    assert ciba.website_verified is False  # registration never vouches for a website


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_ping_and_push_clients_register_with_their_notification_endpoint(register, mode):
    response = register(
        poll_client(backchannel_token_delivery_mode=mode, backchannel_client_notification_endpoint=CALLBACK)
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["backchannel_token_delivery_mode"] == mode
    assert body["backchannel_client_notification_endpoint"] == CALLBACK
    ciba = CibaClient.objects.get(application__client_id=body["client_id"])
    assert ciba.backchannel_token_delivery_mode == mode
    assert ciba.backchannel_client_notification_endpoint == CALLBACK


def test_client_credentials_and_metadata_map_onto_the_ciba_client(register):
    AuthorizationDetailType.objects.create(type="expense_report", name="Expense report")
    response = register(
        poll_client(
            grant_types=[CIBA, "client_credentials"],
            backchannel_user_code_parameter=True,
            authorization_details_types=["expense_report"],
        )
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["grant_types"] == [CIBA, "client_credentials"]
    assert body["authorization_details_types"] == ["expense_report"]
    ciba = CibaClient.objects.get(application__client_id=body["client_id"])
    assert ciba.client_credentials_enabled is True
    assert ciba.refresh_tokens is False
    assert ciba.backchannel_user_code_parameter is True
    assert ciba.authorization_details_types == ["expense_report"]


def test_omitted_scope_registers_every_scope_but_the_administrators(register):
    response = register(poll_client(scope=None))

    assert response.status_code == 201, response.content
    scopes = response.json()["scope"].split()
    assert "openid" in scopes and "profile" in scopes
    assert "introspection" not in scopes


def test_private_key_jwt_with_inline_jwks_gets_no_secret(register):
    jwks = public_jwks()
    response = register(
        poll_client(
            token_endpoint_auth_method="private_key_jwt",
            token_endpoint_auth_signing_alg="ES256",
            backchannel_authentication_request_signing_alg="ES256",
            jwks=jwks,
        )
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["token_endpoint_auth_signing_alg"] == "ES256"
    assert body["backchannel_authentication_request_signing_alg"] == "ES256"
    assert body["jwks"] == jwks
    ciba = CibaClient.objects.get(application__client_id=body["client_id"])
    assert ciba.jwks == jwks
    assert ciba.token_endpoint_auth_method == "private_key_jwt"


def test_private_key_jwt_with_jwks_uri(register):
    response = register(
        poll_client(token_endpoint_auth_method="private_key_jwt", jwks_uri="http://127.0.0.1:8765/jwks")
    )

    assert response.status_code == 201, response.content
    assert response.json()["jwks_uri"] == "http://127.0.0.1:8765/jwks"
    assert "client_secret" not in response.json()


@pytest.mark.parametrize(
    "url",
    ["https://10.0.0.1/jwks", "https://169.254.169.254/latest/meta-data", "http://93.184.216.34/jwks"],
)
def test_jwks_uri_must_pass_the_ssrf_rules(register, url):
    before = rows()
    response = register(poll_client(token_endpoint_auth_method="private_key_jwt", jwks_uri=url))

    assert_registration_error(response, "invalid_client_metadata", "jwks_uri")
    assert rows() == before


@pytest.mark.parametrize(
    ("metadata", "mentions"),
    [
        (poll_client(backchannel_token_delivery_mode=None), "backchannel_token_delivery_mode"),
        ({"client_name": "x", "scope": "openid"}, "backchannel_token_delivery_mode is required"),
        (poll_client(backchannel_token_delivery_mode="carrier-pigeon"), "poll, ping, push"),
        (poll_client(backchannel_token_delivery_mode="ping"), "backchannel_client_notification_endpoint"),
        (
            poll_client(
                backchannel_token_delivery_mode="push", backchannel_client_notification_endpoint="https://10.0.0.1/cb"
            ),
            "backchannel_client_notification_endpoint",
        ),
        (
            poll_client(
                backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint="http://example.com/cb"
            ),
            "backchannel_client_notification_endpoint",
        ),
        (poll_client(backchannel_client_notification_endpoint=CALLBACK), "only for ping and push"),
        (poll_client(grant_types=["client_credentials"]), CIBA),
        (poll_client(grant_types=[CIBA, "authorization_code"]), "Unsupported grant_types: authorization_code"),
        (poll_client(grant_types="urn:openid:params:grant-type:ciba"), "grant_types must be an array"),
        (poll_client(token_endpoint_auth_method="none"), "confidential"),
        (poll_client(token_endpoint_auth_method="client_secret_jwt"), "token_endpoint_auth_method"),
        (poll_client(token_endpoint_auth_signing_alg="ES256"), "private_key_jwt only"),
        (poll_client(token_endpoint_auth_method="private_key_jwt"), "jwks"),
        (
            poll_client(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(), jwks_uri=CALLBACK),
            "not both",
        ),
        (poll_client(token_endpoint_auth_method="private_key_jwt", jwks={"keys": []}), "jwks: The JWK Set has no keys"),
        (
            poll_client(
                token_endpoint_auth_method="private_key_jwt",
                jwks={"keys": [{**public_jwks()["keys"][0], "d": "private"}]},
            ),
            "public keys only",
        ),
        (poll_client(jwks="not a set"), "jwks must be a JWK Set"),
        (poll_client(backchannel_authentication_request_signing_alg="HS256"), "RS256, PS256, ES256, EdDSA"),
        (poll_client(backchannel_authentication_request_signing_alg="PS256"), "jwks"),
        (poll_client(backchannel_user_code_parameter="yes"), "true or false"),
        (poll_client(scope="openid launch_missiles"), "unknown scopes launch_missiles"),
        (poll_client(scope="openid introspection"), "administrator"),
        (poll_client(client_name=""), "client_name is required"),
        (poll_client(client_name="x" * 300), "client_name"),
        (poll_client(client_uri="not a url"), "client_uri"),
        (poll_client(authorization_details_types=["launch_codes"]), "authorization_details_types"),
        (poll_client(id_token_signed_response_alg="none"), "RS256"),
    ],
)
def test_bad_metadata_is_refused_and_nothing_is_written(register, metadata, mentions):
    before = rows()
    response = register(metadata)

    assert_registration_error(response, "invalid_client_metadata", mentions)
    assert rows() == before


def test_redirect_uris_are_refused_as_invalid_redirect_uri(register):
    before = rows()
    response = register(poll_client(redirect_uris=["https://agent.example.com/callback"]))

    assert_registration_error(response, "invalid_redirect_uri", "redirect_uris")
    assert rows() == before


@pytest.mark.parametrize(
    ("raw", "mentions"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'{"client_name": NaN}', "not valid JSON")],
)
def test_a_body_that_is_not_a_json_object_is_refused(register, raw, mentions):
    before = rows()
    assert_registration_error(register(None, raw=raw), "invalid_client_metadata", mentions)
    assert rows() == before


def test_a_form_body_is_refused(client, initial_token):
    response = client.post(REGISTER, {"client_name": "x"}, HTTP_AUTHORIZATION=f"Bearer {initial_token}")
    assert_registration_error(response, "invalid_client_metadata", "application/json")


def test_unknown_metadata_is_ignored(register):
    response = register(poll_client(logo_uri="https://example.com/logo.png", software_id="agent-kit"))

    assert response.status_code == 201, response.content
    assert "software_id" not in response.json()


# --- initial access tokens (RFC 7591 §3) ------------------------------------------------------------------------------


def test_registration_requires_an_initial_access_token(client):
    before = rows()
    response = client.post(REGISTER, json.dumps(poll_client()), content_type="application/json")

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    # RFC 6750 §3.1: no error code in the challenge when no credentials were sent.
    assert response["WWW-Authenticate"] == 'Bearer realm="countersign"'
    assert rows() == before


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic Zm9vOmJhcg==", "Bearer"])
def test_an_invalid_initial_access_token_is_refused(client, header):
    before = rows()
    response = client.post(
        REGISTER, json.dumps(poll_client()), content_type="application/json", HTTP_AUTHORIZATION=header
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith('Bearer realm="countersign", error="invalid_token"')
    assert rows() == before


def test_an_expired_initial_access_token_is_refused(register):
    token = initial_access_token_create(expires_in=60, now=timezone.now() - timedelta(minutes=5))
    response = register(poll_client(), token=token)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": "The initial access token has expired."}


def test_a_registration_access_token_is_not_an_initial_access_token(register):
    first = register(poll_client()).json()
    response = register(poll_client(), token=first["registration_access_token"])

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_a_clients_access_token_is_not_an_initial_access_token(register, agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)
    response = register(poll_client(), token=tokens["access_token"])

    assert response.status_code == 401


def test_initial_access_token_serves_several_registrations_until_it_expires(register):
    assert register(poll_client()).status_code == 201
    assert register(poll_client(client_name="Second bot")).status_code == 201


def test_initial_access_token_is_stored_as_a_checksum_only(initial_token):
    stored = get_access_token_model().objects.get(scope="countersign:register")
    assert stored.token == ""
    assert stored.application is None
    assert initial_token not in json.dumps(list(get_access_token_model().objects.values()), default=str)


@override_settings(REGISTRATION_MODE="open")
def test_open_mode_needs_no_token(client):
    response = client.post(REGISTER, json.dumps(poll_client()), content_type="application/json")
    assert response.status_code == 201, response.content


def test_off_mode_has_no_endpoint(client, register):
    with override_settings(REGISTRATION_MODE="off"):
        response = register(poll_client())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_create_registration_token_command_prints_a_working_token_once(client):
    out = StringIO()
    call_command("create_registration_token", "--expires-in", "600", stdout=out)
    printed = json.loads(out.getvalue())

    assert printed["expires_in"] == 600
    assert printed["registration_endpoint"].startswith(("http://", "https://"))  # absolute, as in discovery
    assert printed["registration_endpoint"].endswith(REGISTER)
    stored = get_access_token_model().objects.get(scope="countersign:register")
    assert stored.token == ""
    assert 590 <= (stored.expires - timezone.now()).total_seconds() <= 600
    response = client.post(
        REGISTER,
        json.dumps(poll_client()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {printed['initial_access_token']}",
    )
    assert response.status_code == 201, response.content


# --- client configuration (RFC 7592) ----------------------------------------------------------------------------------


def manage(client: Client, method: str, registered: dict[str, Any], body: Any = None, token: str | None = None):
    path = registered["registration_client_uri"].removeprefix("http://testserver")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token or registered['registration_access_token']}"}
    if body is None:
        return getattr(client, method)(path, **headers)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json", **headers)


def test_read_returns_the_registered_metadata_without_the_secret(client, register):
    registered = register(
        poll_client(backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=CALLBACK)
    ).json()

    response = manage(client, "get", registered)

    assert response.status_code == 200, response.content
    body = response.json()
    assert "client_secret" not in body
    assert body == {k: v for k, v in registered.items() if k not in ("client_secret", "client_secret_expires_at")}


def test_read_needs_the_registration_access_token(client, register, initial_token):
    registered = register(poll_client()).json()
    for token in ("wrong", initial_token):
        response = manage(client, "get", registered, token=token)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"


def test_update_replaces_the_metadata_and_rotates_the_token(client, register):
    registered = register(poll_client(client_uri="https://expenses.example.com")).json()
    jwks = public_jwks()

    response = manage(
        client,
        "put",
        registered,
        {
            "client_id": registered["client_id"],
            "client_name": "Expense bot 2",
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": CALLBACK,
            "token_endpoint_auth_method": "client_secret_post",
            "backchannel_authentication_request_signing_alg": "PS256",
            "jwks": jwks,
            "registration_access_token": registered["registration_access_token"],  # echoed back: ignored
        },
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["client_name"] == "Expense bot 2"
    assert body["grant_types"] == [CIBA]  # full replacement: refresh_token was not asked for again
    assert "client_uri" not in body
    assert "client_secret" not in body  # a secret method before and after: the secret stays the same
    assert body["registration_access_token"] != registered["registration_access_token"]
    ciba = CibaClient.objects.get(application__client_id=registered["client_id"])
    assert ciba.backchannel_token_delivery_mode == "ping"
    assert ciba.token_endpoint_auth_method == "client_secret_post"
    assert ciba.refresh_tokens is False
    assert ciba.website == ""
    assert ciba.jwks == jwks
    assert ciba.application.name == "Expense bot 2"
    # The old registration access token is gone; the new one works.
    assert manage(client, "get", registered).status_code == 401
    assert (
        manage(
            client, "get", {**registered, "registration_access_token": body["registration_access_token"]}
        ).status_code
        == 200
    )


def test_invalid_update_changes_nothing(client, register):
    registered = register(poll_client()).json()
    before = CibaClient.objects.values().get(application__client_id=registered["client_id"])

    response = manage(
        client,
        "put",
        registered,
        {"client_id": registered["client_id"], "client_name": "x", "backchannel_token_delivery_mode": "push"},
    )

    assert_registration_error(response, "invalid_client_metadata", "backchannel_client_notification_endpoint")
    assert CibaClient.objects.values().get(application__client_id=registered["client_id"]) == before
    assert manage(client, "get", registered).status_code == 200  # the token was not rotated


@pytest.mark.parametrize(
    ("change", "mentions"),
    [({"client_id": "someone-else"}, "client_id"), ({"client_secret": "chosen-by-me"}, "client_secret")],
)
def test_update_must_name_the_client_and_cannot_choose_a_secret(client, register, change, mentions):
    registered = register(poll_client()).json()
    response = manage(client, "put", registered, {**poll_client(client_id=registered["client_id"]), **change})
    assert_registration_error(response, "invalid_client_metadata", mentions)


def test_update_keeps_the_administrators_fapi_flag_and_its_rules(client, register):
    registered = register(
        poll_client(
            token_endpoint_auth_method="private_key_jwt",
            backchannel_authentication_request_signing_alg="PS256",
            jwks=public_jwks(),
        )
    ).json()
    CibaClient.objects.filter(application__client_id=registered["client_id"]).update(fapi_ciba=True)

    response = manage(client, "put", registered, poll_client(client_id=registered["client_id"]))

    assert_registration_error(response, "invalid_client_metadata", "FAPI-CIBA")
    assert CibaClient.objects.get(application__client_id=registered["client_id"]).fapi_ciba is True


def test_switching_to_a_secret_method_issues_a_new_secret_once(client, register, approver, obtain_tokens):
    registered = register(poll_client(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks())).json()

    response = manage(client, "put", registered, poll_client(client_id=registered["client_id"]))

    assert response.status_code == 200, response.content
    secret = response.json()["client_secret"]
    application = get_application_model().objects.get(client_id=registered["client_id"])
    obtain_tokens(Agent(application.client_id, secret, Client(), application), approver.user)


def test_delete_invalidates_the_client_and_keeps_its_record(client, register):
    registered = register(poll_client()).json()

    response = manage(client, "delete", registered)

    assert response.status_code == 204
    # Kept for its requests' audit trail (tests/authz/clients/test_deregistration.py), unusable from now on.
    ciba = CibaClient.objects.get(application__client_id=registered["client_id"])
    assert ciba.deregistered_at is not None
    assert manage(client, "get", registered).status_code == 401


def test_a_manually_created_client_cannot_be_managed(client, agent, register):
    registered = register(poll_client()).json()
    response = manage(
        client, "get", {**registered, "registration_client_uri": f"http://testserver/oauth/register/{agent.client_id}/"}
    )
    assert response.status_code == 401


# --- the registered client at work ------------------------------------------------------------------------------------


def test_a_registered_client_completes_a_ciba_flow_with_its_secret(register, approver, obtain_tokens):
    body = register(poll_client(grant_types=[CIBA, "refresh_token"])).json()
    application = get_application_model().objects.get(client_id=body["client_id"])
    agent = Agent(body["client_id"], body["client_secret"], Client(), application)

    tokens = obtain_tokens(agent, approver.user, binding_message="Expense 42")

    assert tokens["token_type"] == "Bearer"
    assert tokens["id_token"] and tokens["access_token"] and tokens["refresh_token"]
    assert set(tokens["scope"].split()) == {"openid"}


def test_a_registered_client_is_held_to_its_scopes(register, approver):
    body = register(poll_client(scope="openid")).json()
    application = get_application_model().objects.get(client_id=body["client_id"])
    agent = Agent(body["client_id"], body["client_secret"], Client(), application)

    response = agent.bc_authorize(scope="openid email", login_hint=approver.user.username)

    factories.assert_oauth_error(response, 400, "invalid_scope")


# --- discovery --------------------------------------------------------------------------------------------------------


def test_rfc8414_metadata_names_the_registration_endpoint(client):
    data = client.get("/.well-known/oauth-authorization-server").json()
    assert data["registration_endpoint"] == "http://testserver/oauth/register/"


def test_openid_configuration_names_the_registration_endpoint(client):
    data = client.get("/.well-known/openid-configuration").json()
    assert data["registration_endpoint"] == "http://testserver/oauth/register/"


def test_no_registration_endpoint_in_metadata_when_off(client, settings):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "DCR_ENABLED": False}
    data = client.get("/.well-known/oauth-authorization-server").json()
    assert "registration_endpoint" not in data
    assert client.post(REGISTER, "{}", content_type="application/json").status_code == 404


def test_rsa_keys_register_too(register):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    response = register(
        poll_client(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [{**jwk, "kid": "r1"}]})
    )
    assert response.status_code == 201, response.content


def test_other_methods_get_a_json_405(client, register):
    response = client.get(REGISTER)
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"
    assert response["Allow"] == "POST, OPTIONS"
    registered = register(poll_client()).json()
    response = manage(client, "post", registered, {})
    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) == {"GET", "PUT", "DELETE", "OPTIONS"}


def test_registration_tokens_are_not_access_tokens(register, initial_token, agent):
    registered = register(poll_client()).json()
    for value in (initial_token, registered["registration_access_token"]):
        assert agent.post("/oauth/introspect/", {"token": value}).json() == {"active": False}
        userinfo = Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {value}")
        assert userinfo.status_code == 401
