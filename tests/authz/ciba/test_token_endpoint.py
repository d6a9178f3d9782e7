"""The token endpoint for the CIBA grant (CIBA Core §10.1, §11) and the refresh_token grant for CIBA clients."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import timedelta
from urllib.parse import urlencode

import jwt
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from approvals import services as approval_services
from approvals.models import ApprovalRequest
from authz.ciba.poll import request_ref, status_key
from authz.models import CibaClient
from tests import factories
from tests.conftest import CIBA, FORM
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

TOKEN = "/oauth/token/"
Status = ApprovalRequest.Status


def start(agent, **params) -> tuple[str, ApprovalRequest]:
    """A pending request for alice; its auth_req_id and its row."""
    ack = agent.bc_authorize(**{"scope": "openid profile", "login_hint": "alice", **params})
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    return auth_req_id, ApprovalRequest.objects.get(auth_req_id=auth_req_id)


def interval_passes(approval_request: ApprovalRequest) -> None:
    """Simulate the poll interval having elapsed: drop the pacing gate the last poll set (see authz.ciba.poll)."""
    assert cache.delete(f"ciba:poll:{request_ref(approval_request.auth_req_id)}")


def expire(approval_request: ApprovalRequest) -> None:
    """Simulate the request's lifetime having passed. The Redis mirror of pending requests holds the expiry it was
    given at creation (expires_at never changes in real life), so the shortcut of moving it drops that entry too."""
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    cache.delete(status_key(request_ref(approval_request.auth_req_id)))


def assert_tokens(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].split(";")[0] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    return response.json()


def post_form(params, *, path: str = TOKEN, **extra):
    """A form-encoded POST without the Agent's Basic header."""
    return Client().post(path, urlencode(params), content_type=FORM, **extra)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def id_token_claims(client, id_token: str, audience: str) -> dict:
    jwks = client.get("/oauth/jwks/").json()
    (key,) = [jwt.PyJWK(jwk) for jwk in jwks["keys"] if jwk["kid"] == jwt.get_unverified_header(id_token)["kid"]]
    return jwt.decode(id_token, key=key, algorithms=["RS256"], audience=audience, issuer="http://testserver")


# --- pending and pacing -----------------------------------------------------------------------------------------------


def test_pending_request_is_authorization_pending(agent, approver):
    auth_req_id, _ = start(agent)

    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")


def test_first_poll_is_never_slow_down(agent, approver):
    # Straight after the acknowledgement, and for a second request while the first is being slowed down.
    first, _ = start(agent)
    assert_oauth_error(agent.poll(first), 400, "authorization_pending")
    assert_oauth_error(agent.poll(first), 400, "slow_down")
    second, _ = start(agent)

    assert_oauth_error(agent.poll(second), 400, "authorization_pending")


def test_polling_sooner_than_the_interval_is_slow_down_with_the_new_interval(agent, approver):
    auth_req_id, _ = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    body = assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")
    assert re.search(r"\b10 seconds\b", body["error_description"]), body

    # Still too fast: the interval grows by another 5 s (RFC 8628 §3.5).
    body = assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")
    assert re.search(r"\b15 seconds\b", body["error_description"]), body


def test_polling_after_the_interval_is_pending_again_and_the_longer_interval_stays(agent, approver):
    auth_req_id, approval_request = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    body = assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")
    assert "10 seconds" in body["error_description"]

    interval_passes(approval_request)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    body = assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")
    assert "15 seconds" in body["error_description"]


def told_wait(body: dict) -> int:
    return int(re.search(r"wait at least (\d+) seconds", body["error_description"])[1])


@pytest.mark.parametrize("requested_expiry", ["300", "30"])
def test_slow_down_never_asks_to_wait_past_the_end_of_the_request(agent, approver, requested_expiry):
    """A burst of early polls grows the interval past the request's lifetime; the answer still tells the truth."""
    auth_req_id, approval_request = start(agent, requested_expiry=requested_expiry)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    waits = [told_wait(assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")) for _ in range(80)]

    left = (approval_request.expires_at - timezone.now()).total_seconds()
    assert waits[:3] == [10, 15, 20]
    assert max(waits) <= left + 1, (waits, left)
    assert waits[-1] >= left - 5  # capped at what is left, not stuck at a smaller number


def test_approved_request_is_redeemed_even_when_polled_too_soon(agent, approver):
    auth_req_id, _ = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    factories.decide(auth_req_id)

    assert "access_token" in assert_tokens(agent.poll(auth_req_id))


def test_pending_poll_writes_nothing_to_the_database(agent, approver):
    auth_req_id, _ = start(agent)

    with CaptureQueriesContext(connection) as ctx:
        assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    assert writes(ctx.captured_queries) == []
    # Client authentication and the request lookup: two reads.
    assert len(ctx.captured_queries) <= 2, [q["sql"] for q in ctx.captured_queries]


def test_slow_down_poll_writes_nothing_to_the_database(agent, approver):
    auth_req_id, _ = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    with CaptureQueriesContext(connection) as ctx:
        assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")

    assert writes(ctx.captured_queries) == []
    assert len(ctx.captured_queries) <= 2, [q["sql"] for q in ctx.captured_queries]


# --- denied, cancelled, expired ---------------------------------------------------------------------------------------


def test_denied_request_is_access_denied_on_every_poll_until_it_expires(agent, approver):
    auth_req_id, approval_request = start(agent)
    factories.decide(auth_req_id, approve=False)

    assert_oauth_error(agent.poll(auth_req_id), 400, "access_denied")
    assert_oauth_error(agent.poll(auth_req_id), 400, "access_denied")

    expire(approval_request)
    assert_oauth_error(agent.poll(auth_req_id), 400, "expired_token")


def test_cancelled_request_is_access_denied(agent, approver):
    auth_req_id, approval_request = start(agent)
    assert approval_services.approval_request_cancel(approval_request_id=approval_request.pk, actor=None)

    body = assert_oauth_error(agent.poll(auth_req_id), 400, "access_denied")
    assert "cancelled" in body["error_description"]


def test_expired_pending_request_is_expired_token(agent, approver):
    auth_req_id, approval_request = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    expire(approval_request)
    interval_passes(approval_request)

    assert_oauth_error(agent.poll(auth_req_id), 400, "expired_token")


def test_expired_pending_request_is_expired_token_even_when_polled_too_soon(agent, approver):
    auth_req_id, approval_request = start(agent)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    expire(approval_request)

    assert_oauth_error(agent.poll(auth_req_id), 400, "expired_token")


def test_expired_approved_request_that_was_never_redeemed_is_expired_token(agent, approver):
    auth_req_id, approval_request = start(agent)
    factories.decide(auth_req_id)
    expire(approval_request)

    assert_oauth_error(agent.poll(auth_req_id), 400, "expired_token")
    assert ApprovalRequest.objects.get(pk=approval_request.pk).access_token is None
    assert not get_access_token_model().objects.exists()


def test_request_expired_by_the_sweeper_is_expired_token(agent, approver):
    auth_req_id, approval_request = start(agent)
    expire(approval_request)
    assert approval_services.approval_request_expire_due() == 1

    assert_oauth_error(agent.poll(auth_req_id), 400, "expired_token")


# --- approved: the tokens, exactly once -------------------------------------------------------------------------------


def test_approved_request_is_redeemed_for_tokens(agent, approver):
    auth_req_id, approval_request = start(agent)
    factories.decide(auth_req_id)

    token = assert_tokens(agent.poll(auth_req_id))

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "openid profile"
    assert token["expires_in"] > 0
    assert token["access_token"] and token["refresh_token"] and token["id_token"]
    approval_request.refresh_from_db()
    assert approval_request.status == Status.CONSUMED
    assert approval_request.access_token.user == approver.user
    assert approval_request.access_token.application == agent.application


def test_second_redemption_is_invalid_grant(agent, approver):
    auth_req_id, _ = start(agent)
    factories.decide(auth_req_id)
    assert_tokens(agent.poll(auth_req_id))

    assert_oauth_error(agent.poll(auth_req_id), 400, "invalid_grant")
    assert_oauth_error(agent.poll(auth_req_id), 400, "invalid_grant")
    assert get_access_token_model().objects.count() == 1


def test_redeemed_request_stays_invalid_grant_after_its_expiry(agent, approver):
    auth_req_id, approval_request = start(agent)
    factories.decide(auth_req_id)
    assert_tokens(agent.poll(auth_req_id))
    expire(approval_request)

    assert_oauth_error(agent.poll(auth_req_id), 400, "invalid_grant")


def test_another_clients_auth_req_id_is_invalid_grant_and_the_owner_can_still_redeem(agent, make_agent, approver):
    thief = make_agent(name="Other agent")
    auth_req_id, _ = start(agent)
    factories.decide(auth_req_id)

    body = assert_oauth_error(thief.poll(auth_req_id), 400, "invalid_grant")
    unknown = assert_oauth_error(thief.poll("no-such-auth-req-id"), 400, "invalid_grant")
    # The same answer as for an unknown id, so ids cannot be probed.
    assert body == unknown

    assert_tokens(agent.poll(auth_req_id))


def test_another_client_polling_does_not_pace_the_owner(agent, make_agent, approver):
    other = make_agent(name="Other agent")
    auth_req_id, _ = start(agent)
    assert_oauth_error(other.poll(auth_req_id), 400, "invalid_grant")
    assert_oauth_error(other.poll(auth_req_id), 400, "invalid_grant")

    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")


@pytest.mark.parametrize("auth_req_id", ["unknown", "x" * 1000, "ünïcödé", "' OR 1=1 --"])
def test_unknown_auth_req_id_is_invalid_grant(agent, approver, auth_req_id):
    start(agent)

    assert_oauth_error(agent.poll(auth_req_id), 400, "invalid_grant")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"grant_type": CIBA}, id="missing"),
        pytest.param({"grant_type": CIBA, "auth_req_id": ""}, id="empty"),
    ],
)
def test_missing_auth_req_id_is_invalid_request(agent, approver, params):
    assert_oauth_error(agent.post(TOKEN, params), 400, "invalid_request")


def test_auth_req_id_with_nul_is_invalid_request(agent, approver):
    auth_req_id, _ = start(agent)

    assert_oauth_error(agent.poll(auth_req_id + "\x00"), 400, "invalid_request")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(lambda auth_req_id: [("grant_type", CIBA), ("auth_req_id", auth_req_id)] * 2, id="everything"),
        pytest.param(
            lambda auth_req_id: [("grant_type", CIBA), ("auth_req_id", auth_req_id), ("auth_req_id", "other")],
            id="auth_req_id",
        ),
        pytest.param(
            lambda auth_req_id: [("grant_type", "refresh_token"), ("grant_type", CIBA), ("auth_req_id", auth_req_id)],
            id="grant_type",
        ),
    ],
)
def test_repeated_parameter_is_invalid_request_and_redeems_nothing(agent, approver, params):
    auth_req_id, _ = start(agent)
    factories.decide(auth_req_id)

    assert_oauth_error(agent.post(TOKEN, params(auth_req_id)), 400, "invalid_request")

    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == Status.APPROVED
    assert_tokens(agent.poll(auth_req_id))


# --- client authentication and authorization --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(lambda agent: _basic(agent.client_id, agent.client_secret + "x"), id="wrong-secret"),
        pytest.param(lambda agent: _basic("no-such-client", agent.client_secret), id="unknown-client-id"),
        pytest.param(lambda agent: {}, id="no-authentication"),
        pytest.param(lambda agent: {"HTTP_AUTHORIZATION": "Basic %%%"}, id="basic-not-base64"),
    ],
)
def test_failed_client_authentication_is_invalid_client(agent, approver, credentials):
    auth_req_id, _ = start(agent)
    factories.decide(auth_req_id)

    response = post_form({"grant_type": CIBA, "auth_req_id": auth_req_id}, **credentials(agent))

    assert_oauth_error(response, 401, "invalid_client")
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == Status.APPROVED


def test_client_secret_post_from_a_basic_client_is_invalid_client(agent, approver):
    auth_req_id, _ = start(agent)

    response = post_form(
        {
            "grant_type": CIBA,
            "auth_req_id": auth_req_id,
            "client_id": agent.client_id,
            "client_secret": agent.client_secret,
        }
    )

    assert_oauth_error(response, 401, "invalid_client")


def test_basic_and_client_secret_in_the_body_is_invalid_request(agent, approver):
    auth_req_id, _ = start(agent)

    response = agent.post(TOKEN, {"grant_type": CIBA, "auth_req_id": auth_req_id, "client_secret": "x"})

    assert_oauth_error(response, 400, "invalid_request")


def test_client_secret_post_client_polls_and_redeems(make_agent, approver):
    agent = make_agent(token_endpoint_auth_method=CibaClient.AuthMethod.CLIENT_SECRET_POST)
    credentials = {"client_id": agent.client_id, "client_secret": agent.client_secret}
    ack = post_form({**credentials, "scope": "openid", "login_hint": "alice"}, path="/oauth/bc-authorize/")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    poll = {"grant_type": CIBA, "auth_req_id": auth_req_id, **credentials}

    assert_oauth_error(post_form(poll), 400, "authorization_pending")
    assert_oauth_error(agent.poll(auth_req_id), 401, "invalid_client")
    factories.decide(auth_req_id)
    assert_tokens(post_form(poll))


@pytest.mark.parametrize(
    "agent_kwargs", [pytest.param({"ciba": False}, id="no-ciba-settings"), pytest.param({"ciba_enabled": False})]
)
def test_client_not_allowed_to_use_ciba_is_unauthorized_client(make_agent, approver, agent_kwargs):
    agent = make_agent(**agent_kwargs)

    assert_oauth_error(agent.poll("some-auth-req-id"), 400, "unauthorized_client")


def test_client_whose_ciba_was_switched_off_cannot_redeem(agent, approver):
    auth_req_id, approval_request = start(agent)
    factories.decide(auth_req_id)
    CibaClient.objects.filter(application=agent.application).update(ciba_enabled=False)

    assert_oauth_error(agent.poll(auth_req_id), 400, "unauthorized_client")
    assert ApprovalRequest.objects.get(pk=approval_request.pk).status == Status.APPROVED


# --- refresh tokens ---------------------------------------------------------------------------------------------------


def test_client_without_refresh_tokens_gets_none(make_agent, approver, obtain_tokens):
    agent = make_agent(refresh_tokens=False)

    token = obtain_tokens(agent, approver.user)

    assert "refresh_token" not in token
    assert token["access_token"] and token["id_token"]
    assert not get_refresh_token_model().objects.exists()


def test_refresh_token_grant_works_for_a_ciba_client(agent, approver, obtain_tokens):
    token = obtain_tokens(agent, approver.user, scope="openid profile")

    response = agent.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})

    refreshed = assert_tokens(response)
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["scope"] == "openid profile"
    new_access_token = get_access_token_model().objects.get(
        token_checksum=hashlib.sha256(refreshed["access_token"].encode()).hexdigest()
    )
    assert new_access_token.user == approver.user
    assert new_access_token.application == agent.application


def test_refresh_token_of_another_client_is_refused(agent, make_agent, approver, obtain_tokens):
    other = make_agent(name="Other agent")
    token = obtain_tokens(agent, approver.user)

    response = other.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response["Cache-Control"] == "no-store"


# --- the ID token -----------------------------------------------------------------------------------------------------


def test_id_token_has_the_required_claims(agent, approver, client):
    auth_req_id, _ = start(agent)
    approval_request = factories.decide(auth_req_id)
    before = int(time.time())

    token = assert_tokens(agent.poll(auth_req_id))

    claims = id_token_claims(client, token["id_token"], agent.client_id)
    assert claims["iss"] == "http://testserver"
    assert claims["sub"] == str(approver.user.pk)
    assert claims["aud"] == agent.client_id
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5
    assert claims["exp"] - claims["iat"] == oauth2_settings.ID_TOKEN_EXPIRE_SECONDS
    assert claims["auth_time"] == int(approval_request.auth_time.timestamp())
    assert "acr" not in claims
    assert "nonce" not in claims


def test_id_token_has_acr_when_the_approval_recorded_one(agent, approver, client):
    auth_req_id, _ = start(agent, acr_values="urn:example:acr:phone")
    factories.decide(auth_req_id, acr="urn:example:acr:phone")

    token = assert_tokens(agent.poll(auth_req_id))

    assert id_token_claims(client, token["id_token"], agent.client_id)["acr"] == "urn:example:acr:phone"


def test_id_token_auth_time_is_when_the_approver_signed_in(agent, approver, approver_client, client):
    auth_req_id, approval_request = start(agent)
    approver.user.refresh_from_db()
    assert approver.user.last_login is not None  # force_login recorded it
    decided = approver_client.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"})
    assert decided.status_code == 302

    token = assert_tokens(agent.poll(auth_req_id))

    claims = id_token_claims(client, token["id_token"], agent.client_id)
    assert claims["auth_time"] == int(approver.user.last_login.timestamp())


# --- other answers of the endpoint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_are_method_not_allowed(agent, method):
    response = agent.http.generic(method, TOKEN, **agent.basic())

    assert_oauth_error(response, 405, "invalid_request")


def test_oversized_body_is_payload_too_large(agent, approver):
    body = urlencode({"grant_type": CIBA, "auth_req_id": "x" * (3 * 1024 * 1024)})

    response = agent.http.post(TOKEN, body, content_type=FORM, **agent.basic())

    assert_oauth_error(response, 413, "invalid_request")


@pytest.mark.parametrize("grant_type", [None, "urn:example:bogus"])
def test_unknown_grant_type_is_unsupported_grant_type(agent, grant_type):
    params = {} if grant_type is None else {"grant_type": grant_type}

    response = agent.post(TOKEN, params)

    assert response.status_code == 400
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"] == "unsupported_grant_type"
    # oauthlib answers this one itself, without the optional error_description (RFC 6749 §5.2).
    assert set(body) <= {"error", "error_description"}
