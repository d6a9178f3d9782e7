"""Token exchange only narrows (issue 14, findings 1 and 9, and the `resource=http://[` 500).

A token's resource binding, audience, scope and authorization_details are inherited by every token exchanged from it
and can only narrow, whatever parameters each hop names (authz.tokens.exchange.Restrictions); the actor of an exchange
is the calling client (authz.tokens.exchange, actor_token); a resource indicator that is not a URI is invalid_target at
every grant of the token endpoint, never a 500."""

from __future__ import annotations

import itertools
import json

import pytest

from authz.models import TokenDetails
from tests.authz.tokens.test_token_exchange import (
    ACCESS_TOKEN_TYPE,
    PAYMENT,
    exchange,
    introspect,
    issue_subject_token,
    token_row,
)
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

PAYMENTS = "https://payments.example/"
EVIL = "https://bank.evil/"


def test_an_audience_hop_keeps_the_resource_binding(agent, approver):
    """The finding as reported: resource=payments, then audience=<own client_id>, then resource=bank.evil."""
    subject = issue_subject_token(agent, approver)
    bound = exchange(agent, subject, ("resource", PAYMENTS))
    assert bound.status_code == 200, bound.content
    assert_oauth_error(exchange(agent, bound.json()["access_token"], ("resource", EVIL)), 400, "invalid_target")

    addressed = exchange(agent, bound.json()["access_token"], ("audience", agent.client_id))
    assert addressed.status_code == 200, addressed.content
    assert token_row(addressed.json()["access_token"]).resource == [PAYMENTS]

    assert_oauth_error(exchange(agent, addressed.json()["access_token"], ("resource", EVIL)), 400, "invalid_target")


HOPS = ("resource-payments", "resource-evil", "audience-self", "audience-other")


@pytest.mark.parametrize("order", list(itertools.permutations(HOPS)), ids="/".join)
def test_every_order_of_resource_and_audience_hops_only_narrows(agent, approver, make_agent, order):
    """Each hop is asked of the token the previous successful hop gave; whatever it names, the new token is bound
    to no more resources and no more audience than its subject, and a refused hop is invalid_target."""
    other = make_agent(name="Other agent")
    params = {
        "resource-payments": ("resource", PAYMENTS),
        "resource-evil": ("resource", EVIL),
        "audience-self": ("audience", agent.client_id),
        "audience-other": ("audience", other.client_id),
    }
    token = issue_subject_token(agent, approver)
    resources: list[str] = []  # what the current token is bound to; empty: not bound yet
    audience: list[str] = []
    for hop in order:
        name, value = params[hop]
        bound = resources if name == "resource" else audience
        response = exchange(agent, token, (name, value))
        if bound and value not in bound:
            assert_oauth_error(response, 400, "invalid_target")
            continue
        assert response.status_code == 200, (hop, response.content)
        token = response.json()["access_token"]
        if name == "resource":
            resources = [value]
        else:
            audience = [value]
        issued = token_row(token)
        assert issued.resource == resources, hop
        assert TokenDetails.objects.get(access_token=issued).audience == audience, hop
        assert set(introspect(agent, token)["aud"]) == set(resources + audience), hop
    # Whatever the order, once bound to one resource the chain never reaches the other.
    assert resources
    other_resource = EVIL if resources == [PAYMENTS] else PAYMENTS
    assert_oauth_error(exchange(agent, token, ("resource", other_resource)), 400, "invalid_target")


@pytest.mark.parametrize("position", range(4))
def test_scope_and_authorization_details_stay_narrowed_in_any_position(agent, approver, position):
    subject = issue_subject_token(agent, approver, scope="openid profile", details=[PAYMENT])
    narrower = [{**PAYMENT, "actions": ["initiate"]}]
    hops: list[list[tuple[str, str]]] = [
        [("resource", PAYMENTS)],
        [("audience", agent.client_id)],
        [("resource", PAYMENTS), ("audience", agent.client_id)],
    ]
    hops.insert(
        position, [("resource", PAYMENTS), ("scope", "openid"), ("authorization_details", json.dumps(narrower))]
    )
    token = subject
    for index, hop in enumerate(hops):
        response = exchange(agent, token, *hop)
        assert response.status_code == 200, response.content
        token = response.json()["access_token"]
        answer = introspect(agent, token)
        if index >= position:
            assert answer["scope"] == "openid"
            assert answer["authorization_details"] == narrower
            widened = exchange(agent, token, ("resource", PAYMENTS), scope="openid profile")
            assert_oauth_error(widened, 400, "invalid_scope")
            wider_details = exchange(agent, token, ("resource", PAYMENTS), authorization_details=json.dumps([PAYMENT]))
            assert_oauth_error(wider_details, 400, "invalid_authorization_details")


def test_a_named_agent_passes_the_token_on_only_within_its_audience(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    payer = make_agent(name="Payment agent")
    elsewhere = make_agent(name="Elsewhere agent")
    subject = issue_subject_token(agent, approver)
    hop1 = exchange(agent, subject, ("audience", booker.client_id), ("audience", payer.client_id))
    assert hop1.status_code == 200, hop1.content
    hop1_token = hop1.json()["access_token"]

    # The booker may narrow the audience to the payer, never re-address it to an agent the owner did not name.
    assert_oauth_error(exchange(booker, hop1_token, ("audience", elsewhere.client_id)), 400, "invalid_target")
    hop2 = exchange(booker, hop1_token, ("audience", payer.client_id))
    assert hop2.status_code == 200, hop2.content
    hop2_token = hop2.json()["access_token"]
    assert TokenDetails.objects.get(access_token=token_row(hop2_token)).audience == [payer.client_id]
    # A hop that names only a resource keeps the audience.
    hop3 = exchange(payer, hop2_token, ("resource", PAYMENTS))
    assert hop3.status_code == 200, hop3.content
    assert TokenDetails.objects.get(access_token=token_row(hop3.json()["access_token"])).audience == [payer.client_id]


def test_an_actor_token_of_another_client_is_refused(agent, approver, make_agent):
    worker = make_agent(name="Worker agent")
    worker_token = issue_subject_token(worker, approver, scope="openid")
    subject = issue_subject_token(agent, approver)

    response = exchange(
        agent, subject, ("resource", PAYMENTS), actor_token=worker_token, actor_token_type=ACCESS_TOKEN_TYPE
    )

    assert_oauth_error(response, 400, "invalid_grant")


def test_an_actor_token_of_the_caller_names_the_caller(make_agent, approver):
    agent = make_agent(name="Self-acting agent", client_credentials_enabled=True)
    own = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})
    assert own.status_code == 200, own.content
    subject = issue_subject_token(agent, approver)

    response = exchange(
        agent,
        subject,
        ("resource", PAYMENTS),
        actor_token=own.json()["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
    )

    assert response.status_code == 200, response.content
    assert introspect(agent, response.json()["access_token"])["act"] == {"sub": agent.client_id}


@pytest.mark.parametrize("value", ["http://[", "https://[::1", "https://bank.example:99999/", "http://[x]/"])
def test_a_malformed_resource_at_exchange_is_invalid_target(agent, approver, value):
    subject = issue_subject_token(agent, approver)

    assert_oauth_error(exchange(agent, subject, ("resource", value)), 400, "invalid_target")


@pytest.mark.parametrize("value", ["http://[", "https://[::1", "https://bank.example:99999/"])
def test_a_malformed_resource_at_client_credentials_is_invalid_target(make_agent, value):
    agent = make_agent(name="Self-acting agent", client_credentials_enabled=True)

    response = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid", "resource": value})

    assert_oauth_error(response, 400, "invalid_target")


def test_a_malformed_resource_at_refresh_is_invalid_target(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)

    response = agent.post(
        "/oauth/token/",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "resource": "http://["},
    )

    assert_oauth_error(response, 400, "invalid_target")
