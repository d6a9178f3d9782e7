"""A refresh token never outlives the permission it came from (issue 14, finding 4).

- Every grant, refresh included, asks one client-capability policy (authz.models.client_allows_grant): after an
  administrator turns a client's CIBA off, or its refresh tokens, refresh is unauthorized_client.
- A token of an inactive user is inactive everywhere (authz.tokens.policy.token_active): refresh, introspection,
  userinfo, bearer validation and exchange.
- Refresh rotates, and the refresh token's lifetime is absolute: REFRESH_TOKEN_EXPIRE_SECONDS from the person's
  approval, however often the agent refreshed (CountersignValidator.validate_refresh_token).
Time is moved by rewinding every stored timestamp of the grant, never by sleeping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import DateTimeField, F
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from approvals.models import ApprovalRequest
from authz.models import CibaClient, TokenDetails
from tests.authz.tokens.test_token_exchange import exchange
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

TOKEN = "/oauth/token/"
PAYMENTS = "https://payments.example/"


def refresh(agent: Any, refresh_token: str):
    return agent.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def introspect(agent: Any, token: str) -> dict[str, Any]:
    response = agent.post("/oauth/introspect/", {"token": token})
    assert response.status_code == 200, response.content
    return response.json()


def userinfo(token: str):
    return Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {token}")


def refused(response: Any, error: str) -> None:
    """oauthlib's own refusals (here unauthorized_client from CountersignValidator.validate_grant_type) carry no
    error_description; the status, the code and no caching are what matter."""
    assert response.status_code == 400, response.content
    assert response.json()["error"] == error
    assert response["Cache-Control"] == "no-store"


def rewind(seconds: int) -> None:
    """Everything the grant stored happened `seconds` earlier: approvals, tokens and their details."""
    delta = timedelta(seconds=seconds)
    for model in (
        ApprovalRequest,
        get_access_token_model(),
        get_refresh_token_model(),
        get_id_token_model(),
        TokenDetails,
    ):
        for field in model._meta.concrete_fields:
            if isinstance(field, DateTimeField):
                model.objects.filter(**{f"{field.name}__isnull": False}).update(**{field.name: F(field.name) - delta})


def test_refresh_after_ciba_was_turned_off_is_unauthorized(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user, scope="openid profile")
    CibaClient.objects.filter(application=agent.application).update(ciba_enabled=False)

    refused(refresh(agent, tokens["refresh_token"]), "unauthorized_client")
    # The tokens the client holds from CIBA go with the permission.
    assert introspect(agent, tokens["access_token"]) == {"active": False}
    assert userinfo(tokens["access_token"]).status_code == 401


def test_refresh_after_refresh_tokens_were_turned_off_is_unauthorized(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)
    CibaClient.objects.filter(application=agent.application).update(refresh_tokens=False)

    refused(refresh(agent, tokens["refresh_token"]), "unauthorized_client")
    # Only refreshing was withdrawn: the access token the person approved runs out as it would have.
    assert introspect(agent, tokens["access_token"])["active"] is True


def test_a_deactivated_users_tokens_are_inactive_everywhere(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user, scope="openid profile")
    exchanged = exchange(agent, tokens["access_token"], ("resource", PAYMENTS))
    assert exchanged.status_code == 200, exchanged.content
    approver.user.is_active = False
    approver.user.save()

    assert_oauth_error(refresh(agent, tokens["refresh_token"]), 400, "invalid_grant")
    assert introspect(agent, tokens["access_token"]) == {"active": False}
    assert introspect(agent, exchanged.json()["access_token"]) == {"active": False}
    assert userinfo(tokens["access_token"]).status_code == 401
    assert userinfo(exchanged.json()["access_token"]).status_code == 401
    assert_oauth_error(exchange(agent, tokens["access_token"], ("resource", PAYMENTS)), 400, "invalid_grant")


def test_refresh_rotates(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)

    first = refresh(agent, tokens["refresh_token"])
    assert first.status_code == 200, first.content
    assert first.json()["refresh_token"] != tokens["refresh_token"]
    second = refresh(agent, first.json()["refresh_token"])
    assert second.status_code == 200, second.content

    # A rotated refresh token presented again is refused and ends the grant (RFC 9700 section 4.14.2).
    assert_oauth_error(refresh(agent, tokens["refresh_token"]), 400, "invalid_grant")
    refused(refresh(agent, second.json()["refresh_token"]), "invalid_grant")


def test_the_refresh_lifetime_counts_from_the_approval_and_does_not_slide(agent, approver, obtain_tokens):
    lifetime = oauth2_settings.REFRESH_TOKEN_EXPIRE_SECONDS
    tokens = obtain_tokens(agent, approver.user)
    rewind(lifetime - 100)  # approved nearly a lifetime ago

    refreshed = refresh(agent, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    rewind(200)  # the last refresh 200 seconds ago, the approval a lifetime and 100 seconds ago

    assert_oauth_error(refresh(agent, refreshed.json()["refresh_token"]), 400, "invalid_grant")


def test_each_refresh_within_the_lifetime_keeps_the_approvals_time(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)
    current = tokens["refresh_token"]
    for _ in range(3):
        rewind(60)
        response = refresh(agent, current)
        assert response.status_code == 200, response.content
        current = response.json()["refresh_token"]
    approved_at = ApprovalRequest.objects.get().decided_at
    latest = get_access_token_model().objects.get(source_refresh_token__isnull=False, refresh_token__isnull=False)
    assert TokenDetails.objects.get(access_token=latest).granted_at == approved_at
