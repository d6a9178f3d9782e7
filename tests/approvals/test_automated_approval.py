"""The automated-approval endpoint for certification runs: off by default, secret-protected, audited as automated,
refused by a system check in production unless explicitly enabled."""

from __future__ import annotations

import jwt
import pytest
from django.core.checks import run_checks
from django.test import Client

from approvals.models import ApprovalRequest, AuditEvent
from approvals.views import ACR_AUTOMATED

pytestmark = pytest.mark.django_db

SECRET = "certification-" + "s" * 40
URL = "/approvals/automated/"


@pytest.fixture
def automated(settings):
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": SECRET}


def ask(agent) -> str:
    ack = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="Cert run")
    assert ack.status_code == 200, ack.content
    return ack.json()["auth_req_id"]


def test_off_by_default(agent, approver):
    auth_req_id = ask(agent)

    assert Client().get(URL, {"token": auth_req_id, "type": "allow", "secret": ""}).status_code == 404
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.PENDING


@pytest.mark.parametrize("secret", ["", "wrong", SECRET[:-1]])
def test_a_wrong_secret_decides_nothing(automated, agent, approver, secret):
    auth_req_id = ask(agent)

    response = Client().get(URL, {"token": auth_req_id, "type": "allow", "secret": secret})

    assert response.status_code == 403
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.PENDING


def test_allow_approves_as_the_suite_calls_it_and_is_audited_as_automated(automated, agent, approver):
    auth_req_id = ask(agent)

    response = Client().get(URL, {"token": auth_req_id, "type": "allow", "secret": SECRET})

    assert response.status_code == 200 and response.json() == {"status": "approved"}
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    (event,) = AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.APPROVED)
    assert event.actor is None and event.detail["automated_by"] == "127.0.0.1"
    tokens = agent.poll(auth_req_id).json()
    assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["acr"] == ACR_AUTOMATED


def test_deny_by_post_with_a_bearer_secret(automated, agent, approver):
    auth_req_id = ask(agent)

    response = Client().post(URL, {"auth_req_id": auth_req_id, "action": "deny"}, HTTP_AUTHORIZATION=f"Bearer {SECRET}")

    assert response.json() == {"status": "denied"}
    assert agent.poll(auth_req_id).json()["error"] == "access_denied"


def test_a_decided_or_unknown_request_is_not_decided_again(automated, agent, approver):
    auth_req_id = ask(agent)
    Client().get(URL, {"token": auth_req_id, "type": "deny", "secret": SECRET})

    assert Client().get(URL, {"token": auth_req_id, "type": "allow", "secret": SECRET}).status_code == 409
    assert Client().get(URL, {"token": "nope", "type": "allow", "secret": SECRET}).status_code == 404
    assert Client().get(URL, {"token": auth_req_id, "type": "maybe", "secret": SECRET}).status_code == 400
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.DENIED


def ids(settings) -> set[str]:
    return {message.id for message in run_checks() if message.id.startswith("countersign.E1")}


def test_production_refuses_it_unless_explicitly_enabled(settings):
    settings.DEBUG = False
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": SECRET}
    assert "countersign.E109" in ids(settings)

    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_IN_PRODUCTION": True}
    assert "countersign.E109" not in ids(settings)

    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": "short"}
    assert "countersign.E110" in ids(settings)
