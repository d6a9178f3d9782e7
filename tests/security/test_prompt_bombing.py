"""Issue 15, item 3 (a, b) and item 4 (the pending cap): no crowd of clients can bomb one person.

The prompt limit used to be per (client, person): twelve clients sent one person 60 prompts in 1.6 s, and 150
self-registered clients left 750 hour-long requests pending. Now all clients together share a per-person rate, one
person can have only so many requests pending (expired ones never count), and registration itself is rate limited
per address and server-wide, in open mode and with initial access tokens alike.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import ApprovalRequest
from authz.clients.registration import initial_access_token_create
from tests import factories

pytestmark = pytest.mark.django_db

REGISTER = "/oauth/register/"
CIBA = "urn:openid:params:grant-type:ciba"


def test_many_clients_share_one_rate_per_person(make_agent, approver, settings) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "PROMPTS_PER_MINUTE": 5, "PROMPTS_PER_PERSON_PER_MINUTE": 6}
    agents = [make_agent(name=f"Agent {n}") for n in range(4)]
    statuses = []
    for agent in agents:
        for _ in range(3):
            statuses.append(agent.bc_authorize(scope="openid", login_hint="alice").status_code)
    assert statuses.count(200) == 6
    refused = agents[-1].bc_authorize(scope="openid", login_hint="alice")
    body = factories.assert_oauth_error(refused, 403, "access_denied")
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "try again" in body["error_description"]
    # Another person is not affected by alice's flood.
    factories.make_approver("bob")
    assert agents[0].bc_authorize(scope="openid", login_hint="bob").status_code == 200


def test_pending_cap_per_person_across_clients(make_agent, approver, settings) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "MAX_PENDING_PER_PERSON": 3}
    first, second = make_agent(name="First"), make_agent(name="Second")
    assert first.bc_authorize(scope="openid", login_hint="alice").status_code == 200
    assert first.bc_authorize(scope="openid", login_hint="alice").status_code == 200
    assert second.bc_authorize(scope="openid", login_hint="alice").status_code == 200
    refused = second.bc_authorize(scope="openid", login_hint="alice")
    body = factories.assert_oauth_error(refused, 403, "access_denied")
    assert "3 requests waiting" in body["error_description"]
    assert ApprovalRequest.objects.filter(user=approver.user).count() == 3
    # Expired requests do not count, even before the sweeper marks them.
    ApprovalRequest.objects.filter(user=approver.user).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert second.bc_authorize(scope="openid", login_hint="alice").status_code == 200


def _register(http: Client, name: str, **extra: str):
    body = {"client_name": name, "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll", "scope": "openid"}
    return http.post(REGISTER, json.dumps(body), content_type="application/json", **extra)


def test_open_registration_is_rate_limited_per_address(settings) -> None:
    settings.REGISTRATION_MODE = "open"
    settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR = 3
    settings.REGISTRATIONS_PER_HOUR = 100
    http = Client(REMOTE_ADDR="203.0.113.7")
    assert [_register(http, f"Bot {n}").status_code for n in range(3)] == [201, 201, 201]
    refused = _register(http, "Bot 4")
    assert refused.status_code == 429
    assert refused.json()["error"] == "invalid_request"
    assert "this address" in refused.json()["error_description"]
    assert 0 < int(refused["Retry-After"]) <= 3600
    # Another address still may register.
    assert _register(Client(REMOTE_ADDR="198.51.100.9"), "Other bot").status_code == 201


def test_registration_has_a_server_wide_rate(settings) -> None:
    settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR = 100
    settings.REGISTRATIONS_PER_HOUR = 2
    token = initial_access_token_create(expires_in=3600)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    results = [_register(Client(REMOTE_ADDR=f"203.0.113.{n}"), f"Bot {n}", **auth).status_code for n in range(1, 4)]
    assert results == [201, 201, 429]
