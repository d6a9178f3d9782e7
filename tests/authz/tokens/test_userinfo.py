"""The claims people approve are the claims agents get: userinfo answers the standard claims of OpenID Connect Core
5.4 for the approved scopes, from the user's record, and nothing else; the ID token keeps to `sub`."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from django.test import Client

from tests import factories
from tests.authz.tokens.test_token_exchange import exchange

pytestmark = pytest.mark.django_db

PROFILE = {"name", "given_name", "family_name", "preferred_username"}
EMAIL = {"email", "email_verified"}
PHONE = {"phone_number", "phone_number_verified"}


@pytest.fixture
def alice(approver: Any) -> Any:
    approver.user.first_name, approver.user.last_name = "Alice", "Liddell"
    approver.user.save()
    return approver


def tokens_for(agent: Any, approver: Any, scope: str) -> dict[str, Any]:
    approval_request = factories.make_approval_request(approver, agent, scope=scope)
    factories.decide(approval_request.auth_req_id)
    response = agent.poll(approval_request.auth_req_id)
    assert response.status_code == 200, response.content
    return response.json()


def userinfo(access_token: str) -> Any:
    return Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


def claims_of(access_token: str) -> dict[str, Any]:
    response = userinfo(access_token)
    assert response.status_code == 200, response.content
    return response.json()


def test_every_approved_scope_gets_its_claims_from_the_users_record(agent, alice):
    token = tokens_for(agent, alice, "openid profile email phone")

    assert claims_of(token["access_token"]) == {
        "sub": str(alice.user.pk),
        "name": "Alice Liddell",
        "given_name": "Alice",
        "family_name": "Liddell",
        "preferred_username": "alice",
        "email": "alice@example.com",
        "email_verified": False,
        "phone_number": "+14155550123",
        "phone_number_verified": False,
    }


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("openid", set()),
        ("openid profile", PROFILE),
        ("openid email", EMAIL),
        ("openid phone", PHONE),
        ("openid email phone", EMAIL | PHONE),
    ],
)
def test_nothing_beyond_the_approved_scopes(agent, alice, scope, expected):
    token = tokens_for(agent, alice, scope)

    assert set(claims_of(token["access_token"])) == {"sub"} | expected


def test_claims_the_record_does_not_have_are_left_out(agent, make_agent):
    bare = factories.make_approver("bob")  # no names, no email address, no phone number
    token = tokens_for(agent, bare, "openid profile email phone")

    assert claims_of(token["access_token"]) == {"sub": str(bare.user.pk), "preferred_username": "bob"}


def test_the_id_token_carries_no_personal_claims(agent, alice):
    token = tokens_for(agent, alice, "openid profile email phone")

    claims = jwt.decode(token["id_token"], options={"verify_signature": False})
    assert not (PROFILE | EMAIL | PHONE) & set(claims), claims
    assert claims["sub"] == str(alice.user.pk)


def test_a_refreshed_token_answers_the_same_claims(agent, alice):
    token = tokens_for(agent, alice, "openid email")
    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content

    assert set(claims_of(refreshed.json()["access_token"])) == {"sub"} | EMAIL


def exchanged_for_next_hop(agent: Any, make_agent: Any, access_token: str, scope: str) -> str:
    next_hop = make_agent(name="Calendar agent")
    narrowed = exchange(agent, access_token, scope=scope, audience=next_hop.client_id)
    assert narrowed.status_code == 200, narrowed.content
    return narrowed.json()["access_token"]


def test_an_exchanged_token_answers_only_its_narrower_scope(agent, alice, make_agent):
    token = tokens_for(agent, alice, "openid profile email")
    narrowed = exchanged_for_next_hop(agent, make_agent, token["access_token"], "openid profile")

    assert set(claims_of(narrowed)) == {"sub"} | PROFILE


def test_a_token_without_openid_gets_no_claims(agent, alice, make_agent):
    token = tokens_for(agent, alice, "openid profile")
    narrowed = exchanged_for_next_hop(agent, make_agent, token["access_token"], "profile")

    answer = userinfo(narrowed)

    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_token"


def test_a_token_bound_to_a_resource_is_refused_at_userinfo(agent, alice):
    token = tokens_for(agent, alice, "openid profile")
    bound = exchange(agent, token["access_token"], resource="https://calendar.example/")
    assert bound.status_code == 200, bound.content

    assert userinfo(bound.json()["access_token"]).status_code == 401  # RFC 8707: userinfo is not its audience


def test_an_agents_own_token_names_no_person(make_agent):
    agent = make_agent(client_credentials_enabled=True)
    response = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})
    assert response.status_code == 200, response.content

    answer = userinfo(response.json()["access_token"])

    assert answer.status_code == 401, answer.content
    assert answer.json()["error"] == "invalid_token"
    assert answer["WWW-Authenticate"].startswith("Bearer ")


def test_discovery_lists_the_claims(client):
    claims = set(client.get("/.well-known/openid-configuration").json()["claims_supported"])

    assert claims == {"sub"} | PROFILE | EMAIL | PHONE
