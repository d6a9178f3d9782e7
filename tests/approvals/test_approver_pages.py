"""The approver's pages: sign-in, inbox, request page, decision and user code."""

from __future__ import annotations

import re
from functools import partial

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.test import Client
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest, Approver, AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status


# Pages show the requested access in plain words: ask for more than openid.
make_request = partial(factories.make_approval_request, scope="openid profile")


def detail_url(approval_request: ApprovalRequest) -> str:
    return f"/approvals/{approval_request.pk}/"


def decide_url(approval_request: ApprovalRequest) -> str:
    return f"/approvals/{approval_request.pk}/decide/"


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def bob(db):
    return factories.make_approver("bob", email="bob@example.com")


def test_signed_out_user_is_sent_to_login_and_back(agent, approver):
    approval_request = make_request(approver, agent, binding_message="Pay invoice 12")
    browser = Client()

    response = browser.get(detail_url(approval_request))
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={detail_url(approval_request)}"

    login_page = browser.get(response["Location"])
    assert login_page.status_code == 200
    assert f'name="next" value="{detail_url(approval_request)}"' in login_page.content.decode()

    signed_in = browser.post(
        "/accounts/login/",
        {"username": "alice", "password": factories.PASSWORD, "next": detail_url(approval_request)},
    )
    assert signed_in.status_code == 302
    assert signed_in["Location"] == detail_url(approval_request)

    page = browser.get(signed_in["Location"])
    assert page.status_code == 200
    assert "Pay invoice 12" in page.content.decode()


def test_wrong_password_does_not_sign_in(agent, approver):
    approval_request = make_request(approver, agent)
    browser = Client()
    failed = browser.post(
        "/accounts/login/", {"username": "alice", "password": "wrong", "next": detail_url(approval_request)}
    )
    assert failed.status_code == 200  # the form again, with an error
    assert browser.get(detail_url(approval_request)).status_code == 302


def test_login_does_not_redirect_off_site(approver):
    browser = Client()
    response = browser.post(
        "/accounts/login/", {"username": "alice", "password": factories.PASSWORD, "next": "https://evil.example.com/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/approvals/"


@pytest.mark.parametrize("path", ["/approvals/", "/approvals/user-code/"])
def test_other_pages_need_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_inbox_lists_only_own_pending_requests_newest_first(agent, make_agent, approver, approver_client, bob):
    other_agent = make_agent(name="Shopping agent")
    oldest = make_request(approver, agent, created_ago=120, binding_message="oldest")
    newest = make_request(approver, other_agent, created_ago=10, binding_message="newest")
    middle = make_request(approver, agent, created_ago=60, binding_message="middle")
    bobs = make_request(bob, agent, binding_message="for bob")
    decided = make_request(approver, agent, binding_message="decided already")
    services.approval_request_decide(approval_request_id=decided.pk, user=approver.user, approve=False)
    cancelled = make_request(approver, agent, binding_message="cancelled")
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=None)
    expired = make_request(approver, agent, created_ago=400, binding_message="expired")  # 300 s lifetime

    response = approver_client.get("/approvals/")
    assert response.status_code == 200
    html = response.content.decode()

    links = re.findall(r'href="/approvals/([0-9a-f-]{36})/"', html)
    assert links == [str(newest.pk), str(middle.pk), str(oldest.pk)]
    for absent in (bobs, decided, cancelled, expired):
        assert str(absent.pk) not in html
    assert "Shopping agent" in html and "Travel agent" in html


def test_empty_inbox(approver_client):
    response = approver_client.get("/approvals/")
    assert response.status_code == 200
    assert "Nothing is waiting for you." in response.content.decode()


def test_request_page_shows_the_request(agent, approver, approver_client):
    approval_request = make_request(approver, agent, binding_message="Book flight LH 400")
    response = approver_client.get(detail_url(approval_request))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Travel agent" in html
    assert "Book flight LH 400" in html
    assert "See your name and username" in html  # the profile scope, described
    assert 'value="approve"' in html and 'value="deny"' in html
    assert approval_request.auth_req_id not in html


def test_another_users_request_is_not_found(agent, approver, bob):
    bobs = make_request(bob, agent)
    alice = Client()
    alice.force_login(approver.user)

    assert alice.get(detail_url(bobs)).status_code == 404
    assert alice.post(decide_url(bobs), {"decision": "approve"}).status_code == 404
    assert alice.post(decide_url(bobs), {"decision": "deny"}).status_code == 404

    bobs.refresh_from_db()
    assert bobs.status == Status.PENDING
    assert not bobs.events.filter(kind__in=[AuditEvent.Kind.APPROVED, AuditEvent.Kind.DENIED]).exists()


def test_unknown_request_is_not_found(approver_client):
    missing = "00000000-0000-4000-8000-000000000000"
    assert approver_client.get(f"/approvals/{missing}/").status_code == 404
    assert approver_client.post(f"/approvals/{missing}/decide/", {"decision": "approve"}).status_code == 404


def test_decide_by_get_is_not_allowed(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    response = approver_client.get(decide_url(approval_request) + "?decision=approve")
    assert response.status_code == 405
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


def test_decide_without_csrf_token_is_rejected(agent, approver):
    approval_request = make_request(approver, agent)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver.user)

    response = browser.post(decide_url(approval_request), {"decision": "approve"})

    assert response.status_code == 403
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


def test_decide_with_the_pages_csrf_token_works(agent, approver):
    approval_request = make_request(approver, agent)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver.user)
    page = browser.get(detail_url(approval_request))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)

    response = browser.post(decide_url(approval_request), {"decision": "approve", "csrfmiddlewaretoken": token})

    assert response.status_code == 302
    approval_request.refresh_from_db()
    assert approval_request.status == Status.APPROVED


def test_deny_path_gives_the_agent_access_denied(agent, approver, approver_client):
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    auth_req_id = ack.json()["auth_req_id"]
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)

    response = approver_client.post(decide_url(approval_request), {"decision": "deny"}, follow=True)

    assert response.redirect_chain == [(detail_url(approval_request), 302)]
    assert page_messages(response) == ["Denied."]
    html = response.content.decode()
    assert "You denied this request." in html
    assert 'value="approve"' not in html
    approval_request.refresh_from_db()
    assert approval_request.status == Status.DENIED
    event = approval_request.events.get(kind=AuditEvent.Kind.DENIED)
    assert event.actor == approver.user

    poll = agent.poll(auth_req_id)
    assert poll.status_code == 400
    assert poll.json()["error"] == "access_denied"


def test_approve_path_shows_approved(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    response = approver_client.post(decide_url(approval_request), {"decision": "approve"}, follow=True)
    assert page_messages(response) == ["Approved."]
    assert "You approved this request." in response.content.decode()
    approval_request.refresh_from_db()
    assert approval_request.status == Status.APPROVED
    assert approval_request.events.get(kind=AuditEvent.Kind.APPROVED).actor == approver.user


def test_deciding_twice_fails_and_keeps_the_first_decision(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    first = approver_client.post(decide_url(approval_request), {"decision": "deny"}, follow=True)
    assert page_messages(first) == ["Denied."]

    second = approver_client.post(decide_url(approval_request), {"decision": "approve"}, follow=True)

    assert page_messages(second) == ["This request can no longer be decided."]
    assert "You denied this request." in second.content.decode()
    approval_request.refresh_from_db()
    assert approval_request.status == Status.DENIED
    kinds = list(approval_request.events.values_list("kind", flat=True))
    assert kinds.count(AuditEvent.Kind.DENIED) == 1
    assert AuditEvent.Kind.APPROVED not in kinds


def test_invalid_decision_is_refused(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    for data in ({"decision": "maybe"}, {}):
        response = approver_client.post(decide_url(approval_request), data, follow=True)
        assert page_messages(response) == ["Choose Approve or Deny."]
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


def test_expired_request_shows_expired_and_no_buttons(agent, approver, approver_client):
    approval_request = make_request(approver, agent, created_ago=301)  # the default lifetime is 300 s
    assert approval_request.expires_at < timezone.now()

    response = approver_client.get(detail_url(approval_request))

    html = response.content.decode()
    assert response.status_code == 200
    assert "This request expired before it was decided." in html
    assert 'name="decision"' not in html
    assert decide_url(approval_request) not in html
    assert "Approve" not in html and "Deny" not in html

    # Posting anyway changes nothing.
    late = approver_client.post(decide_url(approval_request), {"decision": "approve"}, follow=True)
    assert page_messages(late) == ["This request can no longer be decided."]
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING
    assert approval_request.effective_status() == Status.EXPIRED


def test_cancelled_request_shows_cancelled(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    services.approval_request_cancel(approval_request_id=approval_request.pk, actor=None)
    html = approver_client.get(detail_url(approval_request)).content.decode()
    assert "This request was cancelled." in html
    assert 'name="decision"' not in html


def test_user_code_page_sets_a_hashed_user_code(approver, approver_client):
    page = approver_client.get("/approvals/user-code/")
    assert page.status_code == 200
    assert "You have not set a user code yet." in page.content.decode()

    response = approver_client.post("/approvals/user-code/", {"user_code": "4711 river"}, follow=True)

    assert response.redirect_chain == [("/approvals/user-code/", 302)]
    assert page_messages(response) == ["Your user code is saved."]
    assert "You have a user code." in response.content.decode()
    approver.refresh_from_db()
    assert approver.user_code_hash
    assert "4711 river" not in approver.user_code_hash
    assert check_password("4711 river", approver.user_code_hash)
    assert services.approver_check_user_code(approver=approver, user_code="4711 river")
    assert not services.approver_check_user_code(approver=approver, user_code="4711 rivers")


def test_user_code_page_refuses_a_short_code(approver, approver_client):
    response = approver_client.post("/approvals/user-code/", {"user_code": "123"})
    assert response.status_code == 200
    assert response.context["form"].errors["user_code"]
    approver.refresh_from_db()
    assert approver.user_code_hash == ""


def test_user_code_page_creates_the_approver_for_a_plain_user(db):
    user = get_user_model().objects.create_user("carol", password=factories.PASSWORD)
    browser = Client()
    browser.force_login(user)
    assert browser.post("/approvals/user-code/", {"user_code": "9876"}).status_code == 302
    assert check_password("9876", Approver.objects.get(user=user).user_code_hash)


def test_user_code_set_on_the_page_is_required_at_bc_authorize(make_agent, approver, approver_client):
    approver_client.post("/approvals/user-code/", {"user_code": "4711"})
    agent = make_agent(backchannel_user_code_parameter=True)
    assert agent.bc_authorize(scope="openid", login_hint="alice", user_code="4711").status_code == 200
    wrong = agent.bc_authorize(scope="openid", login_hint="alice", user_code="1234")
    assert wrong.json()["error"] == "invalid_user_code"
