"""Secrets at rest (issue 14, finding 10): tokens are stored as checksums only, registration access tokens expire, and
DOT's RFC 9700 gates are all on.

DOT 3.4.1's COMPLIANT_BCP_RFC9700_TOKEN_STORAGE leaves the `token` column of access, refresh and registration access
tokens empty and keeps their SHA-256 (`token_checksum`), which every lookup already uses.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from authz.clients.registration import initial_access_token_create
from tests import factories
from tests.conftest import CIBA

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def checksum(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def all_token_columns() -> str:
    """Every row of DOT's token tables as the database holds them."""
    with connection.cursor() as cursor:
        dump = []
        for table in (AccessToken._meta.db_table, RefreshToken._meta.db_table):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (model table names)
            dump.append(repr(cursor.fetchall()))
    return "\n".join(dump)


def register(http: Client) -> dict[str, Any]:
    initial = initial_access_token_create(expires_in=3600)
    metadata = {"client_name": "Expense bot", "grant_types": [CIBA, "refresh_token"]}
    response = http.post(
        "/oauth/register/",
        json.dumps({**metadata, "backchannel_token_delivery_mode": "poll"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {initial}",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_access_and_refresh_tokens_are_stored_as_checksums_only_and_still_work(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user, scope="openid profile")

    access = AccessToken.objects.get(token_checksum=checksum(tokens["access_token"]))
    refresh = RefreshToken.objects.get(token_checksum=checksum(tokens["refresh_token"]))
    assert access.token == "" and refresh.token == ""
    stored = all_token_columns()
    assert tokens["access_token"] not in stored and tokens["refresh_token"] not in stored

    # Every lookup goes through the checksum: introspection, userinfo, refresh, revocation.
    assert agent.post("/oauth/introspect/", {"token": tokens["access_token"]}).json()["active"] is True
    userinfo = Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert userinfo.status_code == 200, userinfo.content
    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content
    fresh = refreshed.json()
    assert RefreshToken.objects.get(token_checksum=checksum(fresh["refresh_token"])).token == ""
    assert fresh["refresh_token"] not in all_token_columns()
    assert agent.post("/oauth/revoke/", {"token": fresh["access_token"]}).status_code == 200
    assert agent.post("/oauth/introspect/", {"token": fresh["access_token"]}).json() == {"active": False}


def test_registration_access_tokens_are_stored_as_checksums_only(client):
    registered = register(client)

    stored = AccessToken.objects.get(token_checksum=checksum(registered["registration_access_token"]))
    assert stored.token == ""
    assert registered["registration_access_token"] not in all_token_columns()


def test_registration_access_tokens_expire(client):
    registered = register(client)
    path = registered["registration_client_uri"].removeprefix("http://testserver")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {registered['registration_access_token']}"}
    stored = AccessToken.objects.get(token_checksum=checksum(registered["registration_access_token"]))
    lifetime = timedelta(seconds=oauth2_settings.DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS)
    assert abs(stored.expires - (timezone.now() + lifetime)) < timedelta(minutes=1)
    assert client.get(path, **bearer).status_code == 200

    AccessToken.objects.filter(pk=stored.pk).update(expires=timezone.now() - timedelta(seconds=1))

    response = client.get(path, **bearer)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_an_update_issues_a_registration_access_token_with_a_fresh_lifetime(client):
    registered = register(client)
    path = registered["registration_client_uri"].removeprefix("http://testserver")
    old = AccessToken.objects.get(token_checksum=checksum(registered["registration_access_token"]))
    AccessToken.objects.filter(pk=old.pk).update(expires=timezone.now() + timedelta(minutes=5))
    update = {
        "client_id": registered["client_id"],
        "client_name": "Expense bot",
        "grant_types": [CIBA, "refresh_token"],
        "backchannel_token_delivery_mode": "poll",
    }

    response = client.put(
        path,
        json.dumps(update),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['registration_access_token']}",
    )

    assert response.status_code == 200, response.content
    new = AccessToken.objects.get(token_checksum=checksum(response.json()["registration_access_token"]))
    assert new.token == ""
    assert new.expires - timezone.now() > timedelta(days=1)
    assert not AccessToken.objects.filter(pk=old.pk).exists()


def test_tokens_stored_before_the_upgrade_lose_their_plaintext_and_unending_lifetimes(agent, approver, obtain_tokens):
    """authz migration 0009 on rows written the old way: plaintext tokens, registration tokens valid until 9999."""
    from django.apps import apps

    migration = importlib.import_module("authz.migrations.0009_redact_stored_tokens")
    tokens = obtain_tokens(agent, approver.user)
    registration = register(Client())
    raw = {
        AccessToken: [tokens["access_token"], registration["registration_access_token"]],
        RefreshToken: [tokens["refresh_token"]],
    }
    for model, values in raw.items():
        for value in values:
            model.objects.filter(token_checksum=checksum(value)).update(token=value)
    forever = AccessToken.objects.filter(token_checksum=checksum(registration["registration_access_token"]))
    forever.update(expires=timezone.now().replace(year=9999))

    migration.redact_stored_tokens(apps, None)

    stored = all_token_columns()
    assert not [value for values in raw.values() for value in values if value in stored]
    assert forever.get().expires < timezone.now() + timedelta(
        seconds=oauth2_settings.DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS + 60
    )
    # Still found by checksum, so still usable until they end.
    assert agent.post("/oauth/introspect/", {"token": tokens["access_token"]}).json()["active"] is True
    path = registration["registration_client_uri"].removeprefix("http://testserver")
    bearer = f"Bearer {registration['registration_access_token']}"
    assert Client().get(path, HTTP_AUTHORIZATION=bearer).status_code == 200


def test_a_replayed_refresh_token_revokes_its_family(agent, approver, obtain_tokens):
    """RFC 9700 section 4.14.2: the rotated-out token presented again means one of two holders is an attacker."""
    first = obtain_tokens(agent, approver.user)
    second = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.content

    replay = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    factories.assert_oauth_error(replay, 400, "invalid_grant")

    current = agent.post(
        "/oauth/token/", {"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]}
    )
    factories.assert_oauth_error(current, 400, "invalid_grant")


def test_an_access_token_in_the_query_string_is_refused(agent, approver, obtain_tokens):
    """RFC 9700 section 4.3.2 (RFC 6750 section 2.3): query strings end up in access logs and browser history."""
    tokens = obtain_tokens(agent, approver.user, scope="openid profile")

    response = Client().get("/oauth/userinfo/", {"access_token": tokens["access_token"]})

    assert response.status_code in (400, 401), response.content
    assert Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code == 200


def test_the_deployment_checks_find_nothing_rfc_9700_rules_out():
    messages = [m for m in run_checks(include_deployment_checks=True) if m.id and m.id.startswith("oauth2_provider.")]
    assert messages == []
