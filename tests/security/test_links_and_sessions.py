"""A prompt's link proves possession of one prompt, nothing more (issue 14, finding 2).

Following a link and deciding its request must not sign anyone in: no session that can decide another request,
change the user code, enrol or remove devices, or open the admin. The link's holder may decide that one request
while it is pending; anything else needs a real sign-in. Staff and superuser accounts are not people agents may ask
(bc-authorize answers unknown_user_id), unless APPROVALS["STAFF_APPROVERS"] says so.
"""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from approvals import links
from approvals.models import ApprovalRequest, AuditEvent
from tests import factories
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
SUBSCRIPTION = {
    "endpoint": "http://127.0.0.1:9/push/attacker",
    "keys": {"p256dh": "B" * 87, "auth": "A" * 22},
}


def link_path(approval_request: ApprovalRequest) -> str:
    return links.link_url(approval_request).removeprefix("http://testserver")


def decide_path(approval_request: ApprovalRequest) -> str:
    return f"/approvals/{approval_request.pk}/decide/"


def pending(agent, approver, **params) -> ApprovalRequest:
    return factories.make_approval_request(approver, agent, binding_message="Order 4711", **params)


def decided_by_link(approval_request: ApprovalRequest, decision: str = "approve", **extra: str) -> Client:
    browser = Client()
    assert browser.get(link_path(approval_request)).status_code == 302
    response = browser.post(decide_path(approval_request), {"decision": decision, **extra})
    assert response.status_code == 302, response
    approval_request.refresh_from_db()
    assert approval_request.status != Status.PENDING
    return browser


def sent_to_sign_in(response) -> bool:
    return response.status_code == 302 and "/login/" in response["Location"]


def test_deciding_by_link_signs_no_one_in(agent, approver):
    approval_request = pending(agent, approver)

    browser = decided_by_link(approval_request)

    assert "_auth_user_id" not in browser.session
    assert sent_to_sign_in(browser.get("/approvals/"))
    assert sent_to_sign_in(browser.get("/approvals/pending.json"))
    # The browser still shows the result of its own decision.
    page = browser.get(f"/approvals/{approval_request.pk}/")
    assert page.status_code == 200 and "You approved this request." in page.content.decode()


def test_a_link_decision_cannot_decide_another_pending_request(agent, approver):
    first, second = pending(agent, approver), pending(agent, approver)
    browser = decided_by_link(first)

    assert sent_to_sign_in(browser.get(f"/approvals/{second.pk}/"))
    assert sent_to_sign_in(browser.post(decide_path(second), {"decision": "approve"}))

    second.refresh_from_db()
    assert second.status == Status.PENDING


def test_an_opened_link_is_for_its_own_request_only(agent, approver):
    first, second = pending(agent, approver), pending(agent, approver)
    browser = Client()
    browser.get(link_path(first))  # opened, not decided

    assert sent_to_sign_in(browser.post(decide_path(second), {"decision": "approve"}))
    second.refresh_from_db()
    assert second.status == Status.PENDING


def test_a_link_decision_cannot_change_settings_or_devices(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "PROMPT_CHANNELS": ["approvals.channels.webpush.WebPushChannel"]}
    browser = decided_by_link(pending(agent, approver))

    assert sent_to_sign_in(browser.post("/approvals/user-code/", {"user_code": "attacker-1234"}))
    assert sent_to_sign_in(browser.get("/approvals/devices/enrol/"))
    assert sent_to_sign_in(
        browser.post("/approvals/devices/", json.dumps(SUBSCRIPTION), content_type="application/json")
    )
    assert sent_to_sign_in(browser.get("/approvals/devices/"))
    assert sent_to_sign_in(browser.post("/approvals/devices/1/remove/"))

    approver.refresh_from_db()
    assert approver.user_code_hash == "" and not approver.push_subscriptions.exists()


def test_a_staff_approvers_link_does_not_open_the_admin(agent, settings):
    settings.APPROVALS = {**settings.APPROVALS, "STAFF_APPROVERS": True}
    admin = factories.make_approver("root")
    get_user_model().objects.filter(pk=admin.user.pk).update(is_staff=True, is_superuser=True)
    approval_request = pending(agent, admin)

    browser = decided_by_link(approval_request)

    assert sent_to_sign_in(browser.get("/admin/"))
    assert sent_to_sign_in(browser.get("/admin/approvals/approvalrequest/"))


def test_staff_and_superusers_are_not_people_agents_may_ask(agent, db):
    for username, flags in {"staff": {"is_staff": True}, "root": {"is_superuser": True}}.items():
        person = factories.make_approver(username, email=f"{username}@example.com")
        get_user_model().objects.filter(pk=person.user.pk).update(**flags)

        for hint in (username, f"{username}@example.com"):
            response = agent.bc_authorize(scope="openid", login_hint=hint)
            assert_oauth_error(response, 400, "unknown_user_id")
    assert not ApprovalRequest.objects.exists()


def test_staff_approvers_can_be_allowed_explicitly(agent, settings):
    settings.APPROVALS = {**settings.APPROVALS, "STAFF_APPROVERS": True}
    person = factories.make_approver("staff")
    get_user_model().objects.filter(pk=person.user.pk).update(is_staff=True)

    assert agent.bc_authorize(scope="openid", login_hint="staff").status_code == 200


def test_a_link_decision_says_link_in_the_id_token_and_audit(agent, approver):
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    approval_request = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    browser = Client()
    opened_before = timezone.now().replace(microsecond=0)
    browser.get(link_path(approval_request))

    browser.post(decide_path(approval_request), {"decision": "approve"})

    claims = jwt.decode(
        agent.poll(approval_request.auth_req_id).json()["id_token"], options={"verify_signature": False}
    )
    # The link is the session level (only the person's phone received it); auth_time is when it was opened.
    assert claims["acr"] == links.ACR_SESSION
    assert claims["auth_time"] >= int(opened_before.timestamp())
    (event,) = AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.APPROVED)
    assert event.actor == approver.user and event.detail.get("link") is True


def test_the_password_typed_on_a_link_page_approves_that_request_only(agent, approver):
    stepped_up = pending(agent, approver, acr_values=links.ACR_FRESH_PASSWORD)
    other = pending(agent, approver, acr_values=links.ACR_FRESH_PASSWORD)

    browser = decided_by_link(stepped_up, password=factories.PASSWORD)

    stepped_up.refresh_from_db()
    assert stepped_up.status == Status.APPROVED and stepped_up.acr == links.ACR_FRESH_PASSWORD
    assert "_auth_user_id" not in browser.session
    assert sent_to_sign_in(browser.post(decide_path(other), {"decision": "approve"}))


def test_a_link_opened_in_another_browser_cannot_decide_after_the_first_did(agent, approver):
    approval_request = pending(agent, approver)
    forwarded = Client()
    forwarded.get(link_path(approval_request))
    decided_by_link(approval_request, "deny")

    assert sent_to_sign_in(forwarded.get(f"/approvals/{approval_request.pk}/"))
    assert sent_to_sign_in(forwarded.post(decide_path(approval_request), {"decision": "approve"}))
    approval_request.refresh_from_db()
    assert approval_request.status == Status.DENIED


def test_the_links_hold_ends_with_its_request(agent, approver):
    approval_request = pending(agent, approver)
    browser = Client()
    browser.get(link_path(approval_request))
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert sent_to_sign_in(browser.get(f"/approvals/{approval_request.pk}/"))


def test_opening_a_link_gives_the_browser_a_new_session_key(agent, approver):
    """A session cookie planted before the link is opened (session fixation) must not inherit the link's hold."""
    approval_request = pending(agent, approver)
    planted = Client()
    before = planted.session.session_key  # the test client saves a new session and sets its cookie

    planted.get(link_path(approval_request))

    assert planted.session.session_key != before
