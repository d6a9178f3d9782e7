"""Introspection answers only those a token concerns (issue 14, finding 3; RFC 7662 section 4), and a failed client
authentication is RFC 6749 section 5.2's 401 invalid_client (RFC 7662 section 2.3), never an empty 403.

Who may see `active: true` (authz.tokens.introspection.may_introspect): the client the token was issued to, a client
named in the token's audience, and a registered resource server (`create_agent_client --no-ciba`) for a token bound to
one of its resources or bound to nothing. Everyone else gets {"active": false}, as for an unknown token."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test import Client

from authz.models import CibaClient
from tests.authz.tokens.test_token_exchange import exchange, issue_subject_token
from tests.conftest import FORM, Agent
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

INTROSPECT = "/oauth/introspect/"
PAYMENTS = "https://payments.example/"
EVIL = "https://bank.evil/"


def resource_server(*args: str) -> Agent:
    """A resource server registered the documented way: create_agent_client --no-ciba."""
    out = StringIO()
    call_command("create_agent_client", "--name", "Payments API", "--no-ciba", *args, stdout=out)
    printed = json.loads(out.getvalue())
    application = CibaClient.objects.get(application__client_id=printed["client_id"]).application
    return Agent(printed["client_id"], printed["client_secret"], Client(), application)


def answer(caller: Agent, token: str) -> dict[str, Any]:
    response = caller.post(INTROSPECT, {"token": token})
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    return response.json()


def test_another_client_learns_nothing(agent, approver, make_agent):
    token = issue_subject_token(agent, approver)
    stranger = make_agent(name="Freshly registered agent")

    assert answer(stranger, token) == {"active": False}
    assert answer(agent, token)["active"] is True


def test_a_client_whose_ciba_an_admin_turned_off_is_no_resource_server(agent, approver, make_agent):
    token = issue_subject_token(agent, approver)
    switched_off = make_agent(name="Disabled agent", ciba_enabled=False)

    assert answer(switched_off, token) == {"active": False}


def test_a_bearer_token_with_the_introspection_scope_does_not_widen_it(agent, approver, make_agent):
    token = issue_subject_token(agent, approver)
    stranger = make_agent(name="Self-acting agent", client_credentials_enabled=True)
    own = stranger.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "introspection"})
    assert own.status_code == 200, own.content

    response = Client().post(
        INTROSPECT, f"token={token}", content_type=FORM, HTTP_AUTHORIZATION=f"Bearer {own.json()['access_token']}"
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"active": False}


def test_a_resource_server_sees_unbound_tokens_and_its_own_resources_only(agent, approver):
    api = resource_server("--resource", PAYMENTS)
    unbound = issue_subject_token(agent, approver)
    for_payments = exchange(agent, unbound, ("resource", PAYMENTS)).json()["access_token"]
    for_evil = exchange(agent, unbound, ("resource", EVIL)).json()["access_token"]

    assert answer(api, unbound)["active"] is True
    assert answer(api, for_payments)["active"] is True
    assert answer(api, for_payments)["aud"] == [PAYMENTS]
    assert answer(api, for_evil) == {"active": False}


def test_a_resource_server_without_resources_sees_only_unbound_tokens(agent, approver):
    api = resource_server()
    unbound = issue_subject_token(agent, approver)
    bound = exchange(agent, unbound, ("resource", PAYMENTS)).json()["access_token"]

    assert answer(api, unbound)["active"] is True
    assert answer(api, bound) == {"active": False}


def test_an_agent_named_in_the_audience_may_introspect(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    api = resource_server()
    token = issue_subject_token(agent, approver)
    addressed = exchange(agent, token, ("audience", booker.client_id)).json()["access_token"]

    assert answer(booker, addressed)["active"] is True
    # Bound to an agent: not a token for resource servers that the audience does not name.
    assert answer(api, addressed) == {"active": False}


def test_a_resource_server_named_in_the_audience_may_introspect(agent, approver):
    api = resource_server()
    token = issue_subject_token(agent, approver)
    addressed = exchange(agent, token, ("audience", api.client_id), ("resource", PAYMENTS)).json()["access_token"]

    assert answer(api, addressed)["active"] is True


@pytest.mark.parametrize(
    "headers, body",
    [
        pytest.param({"HTTP_AUTHORIZATION": "Basic " + "d3Jvbmc6d3Jvbmc="}, {}, id="unknown-client"),
        pytest.param({}, {"client_id": "nobody", "client_secret": "wrong"}, id="unknown-client-post"),
        pytest.param({}, {}, id="no-credentials"),
    ],
)
def test_failed_client_authentication_is_401_invalid_client(agent, approver, headers, body):
    token = issue_subject_token(agent, approver)

    response = Client().post(INTROSPECT, urlencode({"token": token, **body}), content_type=FORM, **headers)

    assert_oauth_error(response, 401, "invalid_client")


def test_an_unknown_bearer_token_gets_rfc_6750s_answer(agent, approver):
    token = issue_subject_token(agent, approver)

    response = Client().post(
        INTROSPECT, urlencode({"token": token}), content_type=FORM, HTTP_AUTHORIZATION="Bearer not-a-token"
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_wrong_secret_of_a_real_client_is_401_invalid_client(agent, approver):
    token = issue_subject_token(agent, approver)
    wrong = Agent(agent.client_id, "wrong-secret", Client(), agent.application)

    assert_oauth_error(wrong.post(INTROSPECT, {"token": token}), 401, "invalid_client")
