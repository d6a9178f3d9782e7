"""Prompt links and authentication levels (approvals.links): unguessable, bound to one request and one person,
spent by their first decision, never signing anyone in, and approving at the level the agent asked for."""

from __future__ import annotations

import re
from datetime import timedelta

import jwt
import pytest
from django.test import Client
from django.utils import timezone

from approvals import links
from approvals.models import ApprovalRequest, AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

FRESH = links.ACR_FRESH_PASSWORD


def link_path(approval_request: ApprovalRequest) -> str:
    return links.link_url(approval_request).removeprefix("http://testserver")


def decide_path(approval_request: ApprovalRequest) -> str:
    return f"/approvals/{approval_request.pk}/decide/"


def by_link(approval_request: ApprovalRequest, decision: str, **extra: str) -> tuple[Client, object]:
    """A browser that opens the prompt's link, then taps a decision on the page it lands on."""
    browser = Client()
    browser.get(link_path(approval_request))
    return browser, browser.post(decide_path(approval_request), {"decision": decision, **extra})


def pending(agent, approver, **params):
    return factories.make_approval_request(approver, agent, binding_message="Order 4711", **params)


def test_link_is_44_url_safe_characters_and_unguessable_without_the_secret(agent, approver, settings):
    approval_request = pending(agent, approver)
    token = links.link_token(approval_request)

    assert re.fullmatch(r"[A-Za-z0-9_-]{44}", token)
    assert str(approval_request.pk) not in token and approval_request.auth_req_id not in token
    settings.SECRET_KEY = "another-" + "y" * 50
    assert links.link_token(approval_request) != token
    assert not links.link_authentic(token, approval_request)


def test_opening_the_link_shows_the_request_and_spends_nothing(agent, approver):
    approval_request = pending(agent, approver)
    browser = Client()

    opened = browser.get(link_path(approval_request))
    page = browser.get(opened["Location"])

    # The token leaves the address bar at once, and its one response sends no referrer anywhere.
    assert opened.status_code == 302 and opened["Location"] == f"/approvals/{approval_request.pk}/"
    assert opened["Referrer-Policy"] == "no-referrer"
    assert page.status_code == 200
    assert "Order 4711" in page.content.decode()
    assert "_auth_user_id" not in browser.session  # not signed in by looking
    approval_request.refresh_from_db()
    assert approval_request.link_used_at is None


def test_the_first_decision_by_link_spends_it_and_signs_no_one_in(agent, approver):
    approval_request = pending(agent, approver)

    browser, decided = by_link(approval_request, "approve")

    assert decided.status_code == 302 and decided["Location"] == f"/approvals/{approval_request.pk}/"
    assert "_auth_user_id" not in browser.session
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED
    assert approval_request.acr == links.ACR_SESSION
    assert approval_request.link_used_at is not None
    (event,) = AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.APPROVED)
    assert event.actor == approver.user
    # The browser that decided still sees the result; for anyone else the link is spent.
    assert browser.get(link_path(approval_request))["Location"] == f"/approvals/{approval_request.pk}/"
    assert "You approved this request." in browser.get(f"/approvals/{approval_request.pk}/").content.decode()
    stranger = Client().get(link_path(approval_request))
    assert stranger.status_code == 302 and stranger["Location"].startswith("/accounts/login/?next=")


def test_a_spent_link_does_not_sign_in_again(agent, approver):
    approval_request = pending(agent, approver)
    other_browser = Client()
    other_browser.get(link_path(approval_request))  # opened on two devices before either decided
    by_link(approval_request, "deny")

    again = other_browser.post(decide_path(approval_request), {"decision": "approve"})

    assert again.status_code == 302 and again["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in other_browser.session
    assert other_browser.get(link_path(approval_request))["Location"].startswith("/accounts/login/")
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.DENIED


def test_an_expired_requests_link_signs_no_one_in(agent, approver):
    approval_request = pending(agent, approver)
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    browser, response = by_link(approval_request, "approve")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in browser.session


@pytest.mark.parametrize("tamper", ["mac", "request", "length"])
def test_a_tampered_link_is_not_found(agent, approver, tamper):
    approval_request = pending(agent, approver)
    other = pending(agent, approver)
    token = links.link_token(approval_request)
    forged = {
        "mac": token[:22] + ("A" if token[22] != "A" else "B") + token[23:],
        "request": links.link_token(other)[:22] + token[22:],
        "length": token[:-1],
    }[tamper]

    browser = Client()
    assert browser.get(f"/approvals/l/{forged}/").status_code == 404
    assert browser.post(decide_path(approval_request), {"decision": "approve"})["Location"].startswith("/accounts/")
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.PENDING


def test_failed_link_attempts_are_limited_per_request(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "LINK_MAX_FAILURES": 3}
    approval_request, other = pending(agent, approver), pending(agent, approver)
    token = links.link_token(approval_request)
    browser = Client()
    for n in range(3):
        assert browser.get(f"/approvals/l/{token[:22]}{'x' * 21}{n}/").status_code == 404

    refused = Client(REMOTE_ADDR="192.0.2.7").get(link_path(approval_request))

    assert refused.status_code == 429
    # Not per address: the same browser's link for another request still works.
    assert browser.get(link_path(other)).status_code == 302


def test_another_signed_in_persons_browser_cannot_use_the_link(agent, approver):
    approval_request = pending(agent, approver)
    bob = factories.make_approver("bob")
    browser = Client()
    browser.force_login(bob.user)

    assert browser.get(link_path(approval_request)).status_code == 404
    assert browser.post(decide_path(approval_request), {"decision": "approve"}).status_code == 404

    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.PENDING and approval_request.link_used_at is None
    assert int(browser.session["_auth_user_id"]) == bob.user.pk


# --- authentication levels --------------------------------------------------------------------------------------------


def test_discovery_advertises_both_levels(client):
    metadata = client.get("/.well-known/openid-configuration").json()
    assert metadata["acr_values_supported"] == [links.ACR_SESSION, FRESH]


@pytest.mark.parametrize(
    ("acr_values", "required"),
    [
        ("", links.ACR_SESSION),
        ("urn:other:gold", links.ACR_SESSION),
        (FRESH, FRESH),
        (f"{FRESH} {links.ACR_SESSION}", links.ACR_SESSION),  # both acceptable: the weaker suffices
        (f"urn:other:gold {FRESH}", FRESH),
    ],
)
def test_the_weakest_supported_level_the_agent_accepts_is_required(acr_values, required):
    assert links.required_acr(acr_values) == required


def test_a_link_alone_cannot_approve_what_needs_a_fresh_password(agent, approver):
    approval_request = pending(agent, approver, acr_values=FRESH)
    browser = Client()

    page = browser.get(link_path(approval_request), follow=True)
    assert 'name="password"' in page.content.decode()
    refused = browser.post(decide_path(approval_request), {"decision": "approve"}, follow=True)

    assert "Enter your password" in refused.content.decode()
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.PENDING
    # Denying never needs the password.
    browser.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "deny"})
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.DENIED


def test_typing_the_password_reaches_the_higher_level_and_the_id_token_says_so(agent, approver):
    before = timezone.now().replace(microsecond=0)
    ack = agent.bc_authorize(scope="openid", login_hint="alice", acr_values=FRESH)
    approval_request = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    by_link(approval_request, "approve", password=factories.PASSWORD)

    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED and approval_request.acr == FRESH
    tokens = agent.poll(approval_request.auth_req_id).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["acr"] == FRESH
    assert claims["auth_time"] >= int(before.timestamp())


def test_signing_in_with_the_password_counts_as_fresh_for_a_while(agent, approver, settings):
    approval_request = pending(agent, approver, acr_values=FRESH)
    browser = Client()
    detail = f"/approvals/{approval_request.pk}/"
    browser.post("/accounts/login/", {"username": "alice", "password": factories.PASSWORD, "next": detail})

    assert 'name="password"' not in browser.get(detail).content.decode()
    session = browser.session
    session[links.SESSION_PASSWORD_AT] -= settings.APPROVALS.get("FRESH_PASSWORD_SECONDS", 300) + 1
    session.save()
    assert 'name="password"' in browser.get(detail).content.decode()


def test_wrong_step_up_passwords_lock_the_step_up(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "PASSWORD_MAX_FAILURES": 2}
    approval_request = pending(agent, approver, acr_values=FRESH)
    browser, _ = by_link(approval_request, "approve", password="wrong")  # holding the link, not signed in
    decide = f"/approvals/{approval_request.pk}/decide/"
    for _ in range(1):
        browser.post(decide, {"decision": "approve", "password": "wrong"})

    browser.post(decide, {"decision": "approve", "password": factories.PASSWORD})

    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.PENDING
    assert "_auth_user_id" not in browser.session
