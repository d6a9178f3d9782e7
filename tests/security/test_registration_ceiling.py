"""Issue 14, item 5: a registration update (RFC 7592 PUT) cannot undo an administrator's decisions.

What an administrator last saved for a client is the ceiling of what the client may give itself (CIBA, grants,
scopes, authorization_details types) and the floor of how it must prove itself (private_key_jwt, signed requests);
and the approval page's "verified" mark belongs to the name and website an administrator verified, so a client that
changes either loses it until an administrator verifies it again. Administrators act through the real admin form.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.forms import CheckboxInput
from django.test import Client

from authz.clients.registration import initial_access_token_create
from authz.models import CibaClient
from tests import factories
from tests.authz.tokens.test_rar import install_example_types
from tests.conftest import CIBA

pytestmark = pytest.mark.django_db

REGISTER = "/oauth/register/"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
WEBSITE = "https://expenses.example.com"


def public_jwks() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": "agent-1", "use": "sig", "alg": "ES256"}]}


def metadata(**overrides: Any) -> dict[str, Any]:
    return {
        "client_name": "Expense bot",
        "client_uri": WEBSITE,
        "grant_types": [CIBA, "refresh_token"],
        "backchannel_token_delivery_mode": "poll",
        "scope": "openid profile",
        **overrides,
    }


@pytest.fixture
def register(client: Client) -> Callable[..., dict[str, Any]]:
    token = initial_access_token_create(expires_in=3600)

    def post(**overrides: Any) -> dict[str, Any]:
        response = client.post(
            REGISTER,
            json.dumps(metadata(**overrides)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 201, response.content
        return response.json()

    return post


class Registration:
    """A registered client managing itself with its registration access token, which rotates on every update."""

    def __init__(self, registered: dict[str, Any]) -> None:
        self.client_id = registered["client_id"]
        self.token = registered["registration_access_token"]
        self.path = registered["registration_client_uri"].removeprefix("http://testserver")
        self.http = Client()

    def put(self, **overrides: Any) -> Any:
        body = metadata(client_id=self.client_id, **overrides)
        response = self.http.put(
            self.path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {self.token}"
        )
        if response.status_code == 200:
            self.token = response.json()["registration_access_token"]
        return response

    @property
    def ciba(self) -> CibaClient:
        return CibaClient.objects.select_related("application").get(application__client_id=self.client_id)


def admin_form(admin_client: Client, client_id: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    """The client's page in admin as the browser would post it back, with these CIBA settings changed."""
    ciba = CibaClient.objects.get(application__client_id=client_id)
    url = f"/admin/oauth2_provider/application/{ciba.application_id}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    data: dict[str, Any] = {}
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({management[name].html_name: management[name].value() for name in management.fields})
        forms.extend(inline.formset.forms)
    for form in forms:
        for name in form.fields:
            bound = form[name]
            if form.prefix == "ciba-0" and name in changes:
                value = changes.pop(name)
                if isinstance(value, list | dict):
                    value = json.dumps(value)
            else:
                value = bound.value()
            if isinstance(bound.field.widget, CheckboxInput):
                if value:
                    data[bound.html_name] = "on"
            elif value is not None:
                data[bound.html_name] = value
    assert not changes, f"not fields of the CIBA inline: {changes}"
    return url, data


def admin_saves(admin_client: Client, client_id: str, **changes: Any) -> None:
    """An administrator opens the client's page in admin, changes these CIBA settings and saves."""
    url, data = admin_form(admin_client, client_id, **changes)
    response = admin_client.post(url, data)
    assert response.status_code == 302, page_errors(response)


def page_errors(response: Any) -> Any:
    context = response.context
    if context is None:
        return response.content[:500]
    errors = [context["adminform"].form.errors]
    errors += [inline.formset.errors for inline in context["inline_admin_formsets"]]
    return errors


def grant_types(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return response.json()["grant_types"]


# --- capabilities: an administrator's value is the ceiling ------------------------------------------------------------


def test_an_update_cannot_turn_ciba_back_on_after_an_administrator_turned_it_off(register, admin_client):
    client = Registration(register())
    admin_saves(admin_client, client.client_id, ciba_enabled=False)

    # The client sends back its original metadata, CIBA grant included.
    response = client.put()

    assert CIBA not in grant_types(response)
    assert client.ciba.ciba_enabled is False


def test_an_update_cannot_add_grant_types_an_administrator_did_not_allow(register, admin_client):
    client = Registration(register(grant_types=[CIBA, "client_credentials"]))
    admin_saves(admin_client, client.client_id, client_credentials_enabled=False, token_exchange_enabled=True)

    response = client.put(grant_types=[CIBA, "refresh_token", "client_credentials", EXCHANGE])

    # Token exchange was allowed when the administrator saved; client_credentials and refresh_token were not.
    assert grant_types(response) == [CIBA, EXCHANGE]
    ciba = client.ciba
    assert ciba.client_credentials_enabled is False and ciba.refresh_tokens is False
    assert ciba.token_exchange_enabled is True


def test_a_client_may_narrow_and_widen_again_within_the_administrators_limits(register, admin_client):
    client = Registration(register())
    admin_saves(admin_client, client.client_id, token_exchange_enabled=False)

    assert grant_types(client.put(grant_types=[CIBA])) == [CIBA]
    assert client.ciba.refresh_tokens is False
    assert grant_types(client.put(grant_types=[CIBA, "refresh_token", EXCHANGE])) == [CIBA, "refresh_token"]
    assert client.ciba.refresh_tokens is True


def test_an_update_cannot_clear_an_administrators_authorization_details_types(register, admin_client):
    install_example_types()  # a transactional test before this one may have flushed the migrations' rows
    client = Registration(register())  # no types named: every enabled type
    admin_saves(admin_client, client.client_id, authorization_details_types=["payment_initiation"])

    # Empty means every type: the client's empty list stays within the administrator's list.
    response = client.put()
    assert response.status_code == 200, response.content
    assert response.json()["authorization_details_types"] == ["payment_initiation"]
    assert client.ciba.authorization_details_types == ["payment_initiation"]

    response = client.put(authorization_details_types=["payment_initiation", "calendar_event"])
    assert response.status_code == 200, response.content
    assert client.ciba.authorization_details_types == ["payment_initiation"]

    # Only types outside the list: refused, rather than an empty list that would mean every type.
    response = client.put(authorization_details_types=["calendar_event"])
    body = factories.assert_oauth_error(response, 400, "invalid_client_metadata")
    assert "authorization_details_types" in body["error_description"]
    assert client.ciba.authorization_details_types == ["payment_initiation"]


def test_an_update_stays_within_the_administrators_scopes(register, admin_client):
    client = Registration(register())
    admin_saves(admin_client, client.client_id, allowed_scopes="openid")

    response = client.put(scope=None)  # omitted: everything registration may give, within the ceiling
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid"
    assert client.put(scope="openid profile email").status_code == 200
    assert client.ciba.allowed_scopes == "openid"

    # An empty scope list would mean any scope: refused instead.
    body = factories.assert_oauth_error(client.put(scope="profile"), 400, "invalid_client_metadata")
    assert "scope" in body["error_description"]
    assert client.ciba.allowed_scopes == "openid"


def test_an_administrators_restricted_scope_survives_an_update(register, admin_client):
    client = Registration(register())
    admin_saves(admin_client, client.client_id, allowed_scopes="openid profile introspection")

    assert client.put(scope=None).status_code == 200
    assert client.ciba.allowed_scopes == "openid profile introspection"
    assert client.put(scope="openid introspection").status_code == 200
    assert client.ciba.allowed_scopes == "openid introspection"


def test_without_an_administrators_decision_an_update_may_do_what_registration_may(register):
    client = Registration(register(grant_types=[CIBA]))

    response = client.put(grant_types=[CIBA, "refresh_token", "client_credentials"])

    assert grant_types(response) == [CIBA, "refresh_token", "client_credentials"]
    # Registration never gives an administrator-only scope, with or without an update.
    body = factories.assert_oauth_error(client.put(scope="openid introspection"), 400, "invalid_client_metadata")
    assert "introspection" in body["error_description"]


# --- requirements: an administrator's value is the floor --------------------------------------------------------------


def test_an_update_cannot_drop_an_administrators_private_key_jwt_or_signed_requests(register, admin_client):
    jwks = public_jwks()
    client = Registration(register())
    admin_saves(
        admin_client,
        client.client_id,
        token_endpoint_auth_method="private_key_jwt",
        jwks=jwks,
        backchannel_authentication_request_signing_alg="PS256",
    )
    keys = {"jwks": jwks, "token_endpoint_auth_method": "private_key_jwt"}

    body = factories.assert_oauth_error(client.put(jwks=jwks), 400, "invalid_client_metadata")
    assert "token_endpoint_auth_method" in body["error_description"]
    body = factories.assert_oauth_error(client.put(**keys), 400, "invalid_client_metadata")
    assert "backchannel_authentication_request_signing_alg" in body["error_description"]

    ciba = client.ciba
    assert ciba.token_endpoint_auth_method == "private_key_jwt"
    assert ciba.backchannel_authentication_request_signing_alg == "PS256"
    response = client.put(**keys, backchannel_authentication_request_signing_alg="PS256")
    assert response.status_code == 200, response.content


def test_an_update_cannot_drop_an_administrators_user_code_requirement(register, admin_client):
    client = Registration(register())
    admin_saves(admin_client, client.client_id, backchannel_user_code_parameter=True)

    body = factories.assert_oauth_error(client.put(), 400, "invalid_client_metadata")
    assert "backchannel_user_code_parameter" in body["error_description"]
    assert client.ciba.backchannel_user_code_parameter is True
    assert client.put(backchannel_user_code_parameter=True).status_code == 200


# --- the verified mark ------------------------------------------------------------------------------------------------


@pytest.fixture
def verified(register, admin_client) -> Registration:
    client = Registration(register())
    admin_saves(admin_client, client.client_id, website_verified=True)
    return client


def approval_page(client_id: str, approver: Any) -> str:
    application = CibaClient.objects.get(application__client_id=client_id).application
    agent = type("Agent", (), {"application": application})()
    approval_request = factories.make_approval_request(approver, agent)
    http = Client()
    http.force_login(approver.user)
    response = http.get(f"/approvals/{approval_request.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_verified_mark_survives_an_update_that_keeps_name_and_website(verified, approver):
    assert "✓ verified" in approval_page(verified.client_id, approver)
    assert verified.put(grant_types=[CIBA]).status_code == 200
    assert verified.ciba.website_verified is True
    assert "✓ verified" in approval_page(verified.client_id, approver)


@pytest.mark.parametrize(
    "change", [{"client_name": "Your Bank"}, {"client_uri": "https://bank.example"}], ids=["name", "website"]
)
def test_a_changed_name_or_website_loses_the_verified_mark(verified, approver, change):
    response = verified.put(**change)

    assert response.status_code == 200, response.content
    assert verified.ciba.website_verified is False
    assert "✓ verified" not in approval_page(verified.client_id, approver)
    # Changing it back does not earn the mark back either: only an administrator verifies.
    assert verified.put().status_code == 200
    assert verified.ciba.website_verified is False
