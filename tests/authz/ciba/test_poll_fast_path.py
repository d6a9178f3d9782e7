"""The pending poll's fast path: Redis alone answers "still pending", and never anything else.

Every test here checks one way the fast path could answer wrongly (a wrong secret, another client's request, a
decision, an edited client, Redis being down) and that the database path then gives the spec's answer.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.store import redis_store
from authz import tasks
from authz.ciba.poll import request_ref, status_key
from tests import factories
from tests.factories import assert_oauth_error

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def ask(agent, django_capture_on_commit_callbacks) -> str:
    with django_capture_on_commit_callbacks(execute=True):  # the mirror is written when the request commits
        ack = agent.bc_authorize(scope="openid", login_hint="alice")
    assert ack.status_code == 200, ack.content
    return ack.json()["auth_req_id"]


def interval_passes(auth_req_id: str) -> None:
    assert cache.delete(f"ciba:poll:{request_ref(auth_req_id)}")


def test_pending_poll_of_a_known_client_touches_no_database(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")  # proves the client to the database
    interval_passes(auth_req_id)

    with CaptureQueriesContext(connection) as queries:
        assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
        assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down")

    assert queries.captured_queries == []


def test_wrong_secret_is_never_answered_from_the_mirror(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    agent.client_secret = "not-" + agent.client_secret

    assert_oauth_error(agent.poll(auth_req_id), 401, "invalid_client")


def test_other_method_than_registered_is_never_answered_from_the_mirror(
    agent, approver, django_capture_on_commit_callbacks
):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    interval_passes(auth_req_id)
    body = {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": auth_req_id}
    body |= {"client_id": agent.client_id, "client_secret": agent.client_secret}

    response = agent.http.post("/oauth/token/", body)  # client_secret_post for a client_secret_basic client

    assert_oauth_error(response, 401, "invalid_client")


def test_another_clients_request_is_never_answered_from_the_mirror(
    agent, make_agent, approver, django_capture_on_commit_callbacks
):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    other = make_agent(name="Other agent")
    assert_oauth_error(other.poll(ask(other, django_capture_on_commit_callbacks)), 400, "authorization_pending")

    assert_oauth_error(other.poll(auth_req_id), 400, "invalid_grant")


def test_a_decision_is_seen_by_the_very_next_poll(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    interval_passes(auth_req_id)

    factories.decide(auth_req_id)

    response = agent.poll(auth_req_id)
    assert response.status_code == 200, response.content


def test_a_denial_is_seen_by_the_very_next_poll(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")

    factories.decide(auth_req_id, approve=False)

    assert_oauth_error(agent.poll(auth_req_id), 400, "access_denied")


def test_a_rotated_secret_stops_the_old_one_at_once(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    interval_passes(auth_req_id)

    agent.application.client_secret = "a-brand-new-secret-" + "x" * 60
    agent.application.save()

    assert_oauth_error(agent.poll(auth_req_id), 401, "invalid_client")


def test_a_client_losing_ciba_is_refused_at_once(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    interval_passes(auth_req_id)

    agent.application.ciba.ciba_enabled = False
    agent.application.ciba.save()

    assert_oauth_error(agent.poll(auth_req_id), 400, "unauthorized_client")


def test_polls_are_answered_from_the_database_when_redis_is_down(
    settings, agent, approver, django_capture_on_commit_callbacks
):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    # Nothing listens on port 1: every Redis call fails at once.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }

    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    factories.decide(auth_req_id)
    assert agent.poll(auth_req_id).status_code == 200


def test_requests_are_accepted_and_answered_when_redis_is_down(
    settings, make_agent, django_capture_on_commit_callbacks
):
    factories.make_approver("carol", user_code="4711")
    agent = make_agent(name="Careful agent", backchannel_user_code_parameter=True)
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }

    with django_capture_on_commit_callbacks(execute=True):
        ack = agent.bc_authorize(scope="openid", login_hint="carol", user_code="4711")
        wrong = agent.bc_authorize(scope="openid", login_hint="carol", user_code="0000")

    assert ack.status_code == 200, ack.content
    assert_oauth_error(wrong, 400, "invalid_user_code")
    assert_oauth_error(agent.poll(ack.json()["auth_req_id"]), 400, "authorization_pending")


def test_a_decision_that_missed_redis_is_seen_after_the_sweep(
    settings, agent, approver, django_capture_on_commit_callbacks
):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    interval_passes(auth_req_id)
    working_caches = settings.CACHES
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    factories.decide(auth_req_id)  # commits, but cannot mark the mirror settled
    settings.CACHES = working_caches

    # The mirror still says pending: the very staleness the sweep exists to end.
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    assert tasks.resettle_mirror_task.apply().get() == 1  # as beat runs it

    assert agent.poll(auth_req_id).status_code == 200


def test_mirror_entries_live_as_long_as_their_request(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    expires_at = ApprovalRequest.objects.get(auth_req_id=auth_req_id).expires_at
    store = redis_store()
    client = store.client
    key = store.key(status_key(request_ref(auth_req_id)))
    lifetime = (expires_at - timezone.now()).total_seconds()
    assert lifetime > 60
    assert client.ttl(key) == pytest.approx(lifetime, abs=2)

    factories.decide(auth_req_id, approve=False)

    assert client.ttl(key) == pytest.approx(lifetime + 1, abs=2)


def test_slow_down_from_the_mirror_never_asks_to_wait_past_the_end_of_the_request(
    agent, approver, django_capture_on_commit_callbacks
):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    assert_oauth_error(agent.poll(auth_req_id), 400, "authorization_pending")
    expires_at = ApprovalRequest.objects.get(auth_req_id=auth_req_id).expires_at

    with CaptureQueriesContext(connection) as queries:  # all answered by Redis
        bodies = [assert_oauth_error(agent.poll(auth_req_id), 400, "slow_down") for _ in range(80)]

    assert queries.captured_queries == []
    waits = [int(body["error_description"].split("wait at least ")[1].split()[0]) for body in bodies]
    left = (expires_at - timezone.now()).total_seconds()
    assert waits[:2] == [10, 15]
    assert max(waits) <= left + 1, (waits, left)
    assert waits[-1] >= left - 5
