"""RFC 8693 token exchange at /oauth/token/: narrower tokens for resources and other agents, the `act` chain of
custody, revocation down the chain, and the spec's errors (never a 500)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from authz.models import TokenDetails
from tests import factories
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
BANK = "https://bank.example/payments"
PAYMENT = {
    "type": "payment_initiation",
    "actions": ["initiate", "status"],
    "locations": [BANK],
    "instructedAmount": {"currency": "EUR", "amount": "100.00"},
}
AccessToken = get_access_token_model()


def issue_subject_token(
    agent: Any, approver: Any, *, scope: str = "openid profile", details: list[dict[str, Any]] | None = None
) -> str:
    """An access token from a real CIBA flow: the request, the approver's decision, the redeeming poll."""
    approval_request = factories.make_approval_request(
        approver, agent, scope=scope, authorization_details=details or []
    )
    factories.decide(approval_request.auth_req_id)
    response = agent.poll(approval_request.auth_req_id)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def token_row(value: str) -> Any:
    return AccessToken.objects.get(token_checksum=hashlib.sha256(value.encode()).hexdigest())


def exchange(agent: Any, subject_token: str, *extra: tuple[str, str], **params: str):
    form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        *extra,
        *params.items(),
    ]
    return agent.post("/oauth/token/", form)


def introspect(agent: Any, value: str) -> dict[str, Any]:
    response = agent.post("/oauth/introspect/", {"token": value})
    assert response.status_code == 200, response.content
    return response.json()


def test_exchange_narrows_scope_and_authorization_details(agent, approver):
    subject = issue_subject_token(agent, approver, details=[PAYMENT])
    narrower = {**PAYMENT, "actions": ["status"]}

    response = exchange(
        agent,
        subject,
        ("resource", BANK),
        scope="profile",
        authorization_details=json.dumps([narrower]),
    )

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "access_token",
        "issued_token_type",
        "token_type",
        "expires_in",
        "scope",
        "authorization_details",
    }
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "profile"
    assert body["authorization_details"] == [narrower]
    assert 0 < body["expires_in"] <= 600

    issued = token_row(body["access_token"])
    assert issued.application == agent.application
    assert issued.user == approver.user
    assert issued.resource == [BANK]
    assert not get_refresh_token_model().objects.filter(access_token=issued).exists()
    details = issued.token_details
    assert details.subject_token == token_row(subject)
    assert details.act == {"sub": agent.client_id}
    assert details.authorization_details == [narrower]

    answer = introspect(agent, body["access_token"])
    assert answer["active"] is True
    assert answer["scope"] == "profile"
    assert answer["client_id"] == agent.client_id
    assert answer["sub"] == str(approver.user.pk)
    assert answer["aud"] == [BANK]
    assert answer["act"] == {"sub": agent.client_id}
    assert answer["authorization_details"] == [narrower]


def test_exchange_defaults_to_the_subject_tokens_scope_and_details(agent, approver):
    subject = issue_subject_token(agent, approver, details=[PAYMENT])

    response = exchange(agent, subject, ("resource", BANK))

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid profile"
    assert response.json()["authorization_details"] == [PAYMENT]


def test_exchange_without_authorization_details_omits_them(agent, approver):
    subject = issue_subject_token(agent, approver)

    response = exchange(agent, subject, ("resource", BANK), ("resource", "https://calendar.example/"))

    assert response.status_code == 200, response.content
    assert "authorization_details" not in response.json()
    assert token_row(response.json()["access_token"]).resource == [BANK, "https://calendar.example/"]


def test_wider_scope_is_refused(agent, approver):
    subject = issue_subject_token(agent, approver, scope="openid")

    response = exchange(agent, subject, ("resource", BANK), scope="openid email")

    assert_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize(
    "requested",
    [
        [{**PAYMENT, "actions": ["initiate", "status", "refund"]}],
        [{**PAYMENT, "instructedAmount": {"currency": "EUR", "amount": "1000.00"}}],
        [{**PAYMENT, "creditorName": "Mallory"}],
        [{k: v for k, v in PAYMENT.items() if k != "locations"}],
        [{**PAYMENT, "actions": []}],
        [{**PAYMENT, "type": "account_information"}],
        [PAYMENT, {"type": "account_information", "actions": ["read"]}],
        [{"actions": ["status"]}],
        {"type": "payment_initiation"},
        "not json",
    ],
    ids=[
        "extra-action",
        "higher-amount",
        "extra-field",
        "dropped-constraint",
        "empty-actions",
        "other-type",
        "additional-object",
        "no-type",
        "not-an-array",
        "not-json",
    ],
)
def test_wider_or_unknown_authorization_details_are_refused(agent, approver, requested):
    subject = issue_subject_token(agent, approver, details=[PAYMENT])
    raw = requested if isinstance(requested, str) else json.dumps(requested)

    response = exchange(agent, subject, ("resource", BANK), authorization_details=raw)

    assert_oauth_error(response, 400, "invalid_authorization_details")
    assert TokenDetails.objects.filter(subject_token__isnull=False).count() == 0


def test_act_chain_over_two_hops_to_other_agents(agent, approver, make_agent):
    planner = agent
    booker = make_agent(name="Booking agent")
    payer = make_agent(name="Payment agent")
    subject = issue_subject_token(planner, approver, details=[PAYMENT])

    # The planner names every agent the authority may reach: an audience only narrows along the chain.
    first = exchange(planner, subject, ("audience", booker.client_id), ("audience", payer.client_id))
    assert first.status_code == 200, first.content
    hop1 = first.json()["access_token"]

    # The booking agent holds a token naming it as audience, and passes a narrower one further down.
    second = exchange(
        booker,
        hop1,
        ("audience", payer.client_id),
        ("resource", BANK),
        scope="openid",
        authorization_details=json.dumps([{**PAYMENT, "actions": ["initiate"]}]),
    )
    assert second.status_code == 200, second.content
    hop2 = second.json()["access_token"]

    assert token_row(hop2).application == booker.application
    answer = introspect(payer, hop2)
    assert answer["active"] is True
    assert answer["sub"] == str(approver.user.pk)
    assert answer["client_id"] == booker.client_id
    assert answer["act"] == {"sub": booker.client_id, "act": {"sub": planner.client_id}}
    assert set(answer["aud"]) == {BANK, payer.client_id}
    assert answer["scope"] == "openid"
    assert answer["authorization_details"] == [{**PAYMENT, "actions": ["initiate"]}]
    assert token_row(hop2).expires <= token_row(hop1).expires <= token_row(subject).expires

    # A third agent, not in the first hop's audience, cannot use that token.
    bystander = make_agent(name="Bystander")
    assert_oauth_error(exchange(bystander, hop1, ("audience", payer.client_id)), 400, "invalid_grant")
    # The payer, named in hop2's audience, may exchange it; widening it back is still refused.
    assert_oauth_error(exchange(payer, hop2, ("resource", BANK), scope="openid profile"), 400, "invalid_scope")


def test_actor_token_names_the_acting_client(make_agent, approver):
    # The actor is the calling client: its own token (here from client credentials) is the actor_token it may present;
    # another client's is refused (tests/security/test_token_chain.py).
    agent = make_agent(name="Worker agent", client_credentials_enabled=True)
    own = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"}).json()["access_token"]
    subject = issue_subject_token(agent, approver)

    response = exchange(
        agent,
        subject,
        ("resource", BANK),
        actor_token=own,
        actor_token_type=ACCESS_TOKEN_TYPE,
    )

    assert response.status_code == 200, response.content
    assert introspect(agent, response.json()["access_token"])["act"] == {"sub": agent.client_id}


def test_revoking_the_subject_token_revokes_the_tokens_exchanged_from_it(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    subject = issue_subject_token(agent, approver)
    hop1 = exchange(agent, subject, ("audience", booker.client_id)).json()["access_token"]
    hop2 = exchange(booker, hop1, ("resource", BANK)).json()["access_token"]
    unrelated = exchange(agent, issue_subject_token(agent, approver), ("resource", BANK)).json()["access_token"]

    revoked = agent.post("/oauth/revoke/", {"token": subject})
    assert revoked.status_code == 200

    assert introspect(agent, subject) == {"active": False}
    assert introspect(booker, hop1) == {"active": False}
    assert introspect(booker, hop2) == {"active": False}
    assert introspect(agent, unrelated)["active"] is True
    assert_oauth_error(exchange(booker, hop1, ("resource", BANK)), 400, "invalid_grant")


def test_another_client_cannot_revoke_the_chain(agent, approver, make_agent):
    other = make_agent(name="Other agent")
    subject = issue_subject_token(agent, approver)
    exchanged = exchange(agent, subject, ("resource", BANK)).json()["access_token"]

    assert other.post("/oauth/revoke/", {"token": subject}).status_code == 200  # RFC 7009 §2.2: no disclosure

    assert introspect(agent, subject)["active"] is True
    assert introspect(agent, exchanged)["active"] is True


def test_revoking_an_exchanged_token_leaves_its_subject_active(agent, approver):
    subject = issue_subject_token(agent, approver)
    exchanged = exchange(agent, subject, ("resource", BANK)).json()["access_token"]

    assert agent.post("/oauth/revoke/", {"token": exchanged}).status_code == 200

    assert introspect(agent, exchanged) == {"active": False}
    assert introspect(agent, subject)["active"] is True


def test_a_token_whose_subject_disappeared_cannot_be_exchanged_further(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    subject = issue_subject_token(agent, approver)
    hop1 = exchange(agent, subject, ("audience", booker.client_id)).json()["access_token"]

    # Not through the revocation endpoint (a rotated refresh token or an admin removes the row).
    token_row(subject).delete()

    assert_oauth_error(exchange(booker, hop1, ("resource", BANK)), 400, "invalid_grant")
    # The link was nulled by the deletion; the act claim still marks hop1 as exchanged.
    assert introspect(booker, hop1) == {"active": False}


def test_expired_subject_token_is_refused(agent, approver):
    subject = issue_subject_token(agent, approver)
    AccessToken.objects.filter(pk=token_row(subject).pk).update(expires=timezone.now() - timedelta(seconds=1))

    assert_oauth_error(exchange(agent, subject, ("resource", BANK)), 400, "invalid_grant")


def test_exchanged_token_expires_no_later_than_its_subject(agent, approver):
    subject = issue_subject_token(agent, approver)
    soon = timezone.now() + timedelta(seconds=90)
    AccessToken.objects.filter(pk=token_row(subject).pk).update(expires=soon)

    response = exchange(agent, subject, ("resource", BANK))

    assert response.status_code == 200, response.content
    assert response.json()["expires_in"] <= 90
    assert token_row(response.json()["access_token"]).expires <= soon


def test_another_clients_token_is_refused(agent, approver, make_agent):
    other = make_agent(name="Other agent")
    subject = issue_subject_token(other, approver)

    assert_oauth_error(exchange(agent, subject, ("resource", BANK)), 400, "invalid_grant")


def test_unknown_subject_token_is_refused(agent):
    assert_oauth_error(exchange(agent, "not-a-token", ("resource", BANK)), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ([("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BANK)], "invalid_request"),
        ([("subject_token", "{subject}"), ("resource", BANK)], "invalid_request"),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
                ("resource", BANK),
            ],
            "invalid_request",
        ),
        ([("subject_token", "{subject}"), ("subject_token_type", ACCESS_TOKEN_TYPE)], "invalid_request"),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", BANK),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
            ],
            "invalid_request",
        ),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", BANK),
                ("actor_token", "{subject}"),
            ],
            "invalid_request",
        ),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", BANK),
                ("subject_token", "{subject}"),
            ],
            "invalid_request",
        ),
        (
            [("subject_token", "{subject}"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("audience", "nobody")],
            "invalid_target",
        ),
        (
            [("subject_token", "{subject}"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", "not a uri")],
            "invalid_target",
        ),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", "https://bank.example/#frag"),
            ],
            "invalid_target",
        ),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", "urn:example:thing"),
            ],
            "invalid_target",
        ),
        (
            [
                ("subject_token", "{subject}"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("resource", BANK),
                ("actor_token", "garbage"),
                ("actor_token_type", ACCESS_TOKEN_TYPE),
            ],
            "invalid_grant",
        ),
    ],
    ids=[
        "no-subject-token",
        "no-subject-token-type",
        "id-token-subject",
        "no-target",
        "refresh-token-requested",
        "actor-token-without-type",
        "repeated-subject-token",
        "unknown-audience",
        "resource-not-a-uri",
        "resource-with-fragment",
        "resource-urn",
        "unknown-actor-token",
    ],
)
def test_malformed_requests_get_the_specs_errors(agent, approver, form, error):
    subject = issue_subject_token(agent, approver)
    filled = [(key, value.replace("{subject}", subject)) for key, value in form]

    response = agent.post("/oauth/token/", [("grant_type", TOKEN_EXCHANGE), *filled])

    assert_oauth_error(response, 400, error)


def test_resource_outside_the_subject_tokens_resources_is_refused(agent, approver):
    subject = issue_subject_token(agent, approver)
    narrowed = exchange(agent, subject, ("resource", BANK)).json()["access_token"]

    response = exchange(agent, narrowed, ("resource", "https://elsewhere.example/"))

    assert_oauth_error(response, 400, "invalid_target")
    assert exchange(agent, narrowed, ("resource", BANK)).status_code == 200


def test_client_with_exchange_disabled_is_refused(make_agent, approver):
    restricted = make_agent(name="Restricted agent", token_exchange_enabled=False)
    subject = issue_subject_token(restricted, approver)

    assert_oauth_error(exchange(restricted, subject, ("resource", BANK)), 400, "unauthorized_client")


def test_client_without_countersign_settings_is_refused(make_agent):
    plain = make_agent(name="Plain OAuth client", ciba=False)

    assert_oauth_error(exchange(plain, "whatever", ("resource", BANK)), 400, "unauthorized_client")


def test_wrong_client_secret_is_invalid_client(agent, approver):
    subject = issue_subject_token(agent, approver)
    agent.client_secret = "wrong"

    assert_oauth_error(exchange(agent, subject, ("resource", BANK)), 401, "invalid_client")


@pytest.mark.parametrize(
    "extra",
    [
        [("subject_token", "a\x00b"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BANK)],
        [("subject_token", "x" * 20_000), ("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BANK)],
        [("subject_token", "é✓"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("audience", "\x00")],
        [("subject_token", "t"), ("subject_token_type", ACCESS_TOKEN_TYPE)]
        + [("audience", f"a{i}") for i in range(50)],
        [
            ("subject_token", "t"),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("resource", "https://[::1"),
        ],
        [("subject_token", "t"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BANK), ("scope", "")],
        [("subject_token", "t"), ("subject_token_type", ACCESS_TOKEN_TYPE), ("authorization_details", "[1,2]")],
    ],
)
def test_garbage_never_causes_a_server_error(agent, extra):
    response = agent.post("/oauth/token/", [("grant_type", TOKEN_EXCHANGE), *extra])

    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"] in {"invalid_request", "invalid_target", "invalid_grant"}


def test_garbage_authorization_details_with_a_real_subject_token(agent, approver):
    subject = issue_subject_token(agent, approver, details=[PAYMENT])
    for raw in ("[1,2]", '[{"type": 5}]', "null", "[" * 5000, '{"a":' * 100 + "1" + "}" * 100):
        response = exchange(agent, subject, ("resource", BANK), authorization_details=raw)
        assert_oauth_error(response, 400, "invalid_authorization_details")


def test_discovery_lists_token_exchange(client):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        data = client.get(path).json()
        assert TOKEN_EXCHANGE in data["grant_types_supported"]


def test_refreshing_the_subject_token_revokes_the_tokens_exchanged_from_it(agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    approval_request = factories.make_approval_request(approver, agent, scope="openid")
    factories.decide(approval_request.auth_req_id)
    tokens = agent.poll(approval_request.auth_req_id).json()
    exchanged = exchange(agent, tokens["access_token"], ("audience", booker.client_id)).json()["access_token"]

    # DOT rotates the refresh token and deletes the access token it came with.
    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content

    assert introspect(agent, tokens["access_token"]) == {"active": False}
    assert introspect(booker, exchanged) == {"active": False}
    assert introspect(agent, refreshed.json()["access_token"])["active"] is True


def test_unauthenticated_exchange_is_invalid_client(agent, approver, client):
    subject = issue_subject_token(agent, approver)
    form = urlencode(
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": BANK,
            "client_id": agent.client_id,
        }
    )

    response = client.post("/oauth/token/", form, content_type="application/x-www-form-urlencoded")

    assert_oauth_error(response, 401, "invalid_client")


def test_the_token_admin_shows_the_act_chain_and_what_was_approved(admin_client, agent, approver, make_agent):
    booker = make_agent(name="Booking agent")
    subject = issue_subject_token(agent, approver, details=[PAYMENT])
    exchanged = exchange(agent, subject, ("audience", booker.client_id)).json()["access_token"]

    response = admin_client.get(f"/admin/oauth2_provider/accesstoken/{token_row(exchanged).pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Act (RFC 8693)" in html
    assert f"&quot;sub&quot;: &quot;{agent.client_id}&quot;" in html
    assert "payment_initiation" in html
    assert exchanged not in html and subject not in html  # never the token values
