"""The admin: approval requests are read-only and can only be cancelled; the client admin shows CIBA settings."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest, Approver, AuditEvent, Delivery, PushSubscription
from tests import factories

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
CHANGELIST = "/admin/approvals/approvalrequest/"


def change_url(approval_request: ApprovalRequest) -> str:
    return f"{CHANGELIST}{approval_request.pk}/change/"


def listed(response) -> set[str]:
    """The primary keys of the requests on a changelist page."""
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', response.content.decode()))


def run_action(admin_client, action: str, *requests: ApprovalRequest):
    return admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(r.pk) for r in requests]}, follow=True
    )


def test_superuser_can_list_requests(admin_client, agent, approver):
    first = factories.make_approval_request(approver, agent, binding_message="first")
    second = factories.make_approval_request(approver, agent, binding_message="second")
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == {str(first.pk), str(second.pk)}
    html = response.content.decode()
    assert "first" in html and "second" in html


def test_superuser_can_view_a_request_with_its_audit_events(admin_client, agent, approver):
    approval_request = factories.make_approval_request(approver, agent, binding_message="Pay invoice 12")
    services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)

    response = admin_client.get(change_url(approval_request))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Pay invoice 12" in html
    # The audit trail, in the page's timeline (authz.review.timeline): created, then approved by alice.
    timeline = html[html.index('class="review-timeline"') :]
    assert timeline.index("Created") < timeline.index("Approved")
    assert "alice" in timeline
    # The auth_req_id is the agent's bearer credential for the tokens: never shown.
    assert approval_request.auth_req_id not in html


def test_change_page_offers_no_way_to_change_anything(admin_client, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    response = admin_client.get(change_url(approval_request))
    html = response.content.decode()
    assert 'name="status"' not in html
    assert 'name="_save"' not in html
    assert "/delete/" not in html
    assert response.context["has_change_permission"] is False


@pytest.mark.parametrize("status", ["approved", "denied", "cancelled"])
def test_posting_to_the_change_page_is_forbidden(admin_client, agent, approver, status):
    approval_request = factories.make_approval_request(approver, agent)
    response = admin_client.post(
        change_url(approval_request), {"status": status, "binding_message": "changed", "_save": "Save"}
    )
    assert response.status_code == 403
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING
    assert approval_request.binding_message == ""
    assert list(approval_request.events.values_list("kind", flat=True)) == [Kind.CREATED]


def test_there_is_no_add_or_delete(admin_client, admin_user, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}add/", {"scope": "openid"}).status_code == 403
    assert admin_client.post(f"{CHANGELIST}{approval_request.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApprovalRequest.objects.filter(pk=approval_request.pk).exists()

    model_admin = admin.site._registry[ApprovalRequest]
    request = RequestFactory().get(CHANGELIST)
    request.user = admin_user
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request, approval_request) is False
    assert model_admin.has_delete_permission(request, approval_request) is False
    assert model_admin.has_view_permission(request, approval_request) is True
    assert "delete_selected" not in model_admin.get_actions(request)


def test_filter_by_status(admin_client, agent, approver):
    swept = factories.make_approval_request(approver, agent, created_ago=400)
    assert services.approval_request_expire_due() == 1
    pending = factories.make_approval_request(approver, agent)
    overdue = factories.make_approval_request(
        approver, agent, created_ago=400
    )  # PENDING in the row, but past expires_at
    approved = factories.make_approval_request(approver, agent)
    services.approval_request_decide(approval_request_id=approved.pk, user=approver.user, approve=True)
    approved_unredeemed = factories.make_approval_request(
        approver, agent, created_ago=400
    )  # approved in time, never redeemed
    services.approval_request_decide(
        approval_request_id=approved_unredeemed.pk,
        user=approver.user,
        approve=True,
        now=approved_unredeemed.created_at + timedelta(seconds=10),
    )
    cancelled = factories.make_approval_request(approver, agent)
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=None)
    assert ApprovalRequest.objects.get(pk=overdue.pk).status == Status.PENDING
    assert ApprovalRequest.objects.get(pk=approved_unredeemed.pk).status == Status.APPROVED

    def filtered(status: str) -> set[str]:
        response = admin_client.get(CHANGELIST, {"status": status})
        assert response.status_code == 200
        return listed(response)

    assert filtered("expired") == {str(swept.pk), str(overdue.pk), str(approved_unredeemed.pk)}
    assert filtered("pending") == {str(pending.pk)}
    assert filtered("approved") == {str(approved.pk)}
    assert filtered("cancelled") == {str(cancelled.pk)}
    assert filtered("denied") == set()
    assert len(filtered("")) == 6


def test_filter_expired_includes_pending_past_expiry(admin_client, agent, approver):
    live = factories.make_approval_request(approver, agent)
    overdue = factories.make_approval_request(approver, agent, created_ago=400)
    assert ApprovalRequest.objects.get(pk=overdue.pk).status == Status.PENDING

    expired = listed(admin_client.get(CHANGELIST, {"status": "expired"}))
    pending = listed(admin_client.get(CHANGELIST, {"status": "pending"}))

    assert expired == {str(overdue.pk)}
    assert pending == {str(live.pk)}
    # The list shows the status as the agent sees it.
    assert "Expired" in admin_client.get(change_url(overdue)).content.decode()


def test_filter_by_client(admin_client, make_agent, approver):
    travel = make_agent(name="Travel agent")
    shopping = make_agent(name="Shopping agent")
    one = factories.make_approval_request(approver, travel)
    two = factories.make_approval_request(approver, shopping)
    three = factories.make_approval_request(approver, shopping)

    response = admin_client.get(CHANGELIST, {"client__id__exact": shopping.application.pk})

    assert response.status_code == 200
    assert listed(response) == {str(two.pk), str(three.pk)}
    assert str(one.pk) not in listed(response)


def test_cancel_action_cancels_a_pending_request(admin_client, admin_user, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    ack = agent.bc_authorize(scope="openid", login_hint="alice")
    from_agent = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])

    response = run_action(admin_client, "cancel_requests", approval_request, from_agent)

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "Cancelled 2 pending request(s); their agents get access_denied."
    ]
    for cancelled in (approval_request, from_agent):
        cancelled.refresh_from_db()
        assert cancelled.status == Status.CANCELLED
        event = cancelled.events.get(kind=Kind.CANCELLED)
        assert event.actor == admin_user
    # The agent learns that the request will not be approved.
    poll = agent.poll(ack.json()["auth_req_id"])
    assert poll.status_code == 400 and poll.json()["error"] == "access_denied"


def test_cancel_action_leaves_decided_requests_alone(admin_client, agent, approver):
    approved = factories.make_approval_request(approver, agent)
    services.approval_request_decide(approval_request_id=approved.pk, user=approver.user, approve=True)
    denied = factories.make_approval_request(approver, agent)
    services.approval_request_decide(approval_request_id=denied.pk, user=approver.user, approve=False)
    pending = factories.make_approval_request(approver, agent)

    response = run_action(admin_client, "cancel_requests", approved, denied, pending)

    assert [str(m) for m in response.context["messages"]] == [
        "Cancelled 1 pending request(s); their agents get access_denied. 2 were no longer pending and were left as "
        "they are."
    ]
    approved.refresh_from_db()
    denied.refresh_from_db()
    pending.refresh_from_db()
    assert approved.status == Status.APPROVED
    assert denied.status == Status.DENIED
    assert pending.status == Status.CANCELLED
    assert not approved.events.filter(kind=Kind.CANCELLED).exists()
    assert not denied.events.filter(kind=Kind.CANCELLED).exists()


def test_expire_action_expires_overdue_requests_only(admin_client, agent, approver):
    live = factories.make_approval_request(approver, agent)
    overdue = factories.make_approval_request(approver, agent, created_ago=400)

    response = run_action(admin_client, "expire_due_requests", live)

    assert [str(m) for m in response.context["messages"]] == ["1 request(s) expired."]
    live.refresh_from_db()
    overdue.refresh_from_db()
    assert live.status == Status.PENDING
    assert overdue.status == Status.EXPIRED
    assert overdue.events.filter(kind=Kind.EXPIRED).count() == 1


def test_admin_cannot_approve_on_a_users_behalf(admin_user, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    for approve in (True, False):
        assert (
            services.approval_request_decide(approval_request_id=approval_request.pk, user=admin_user, approve=approve)
            is False
        )
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING
    assert list(approval_request.events.values_list("kind", flat=True)) == [Kind.CREATED]


def test_admin_cannot_open_a_users_request_on_the_approver_pages(admin_client, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    assert admin_client.get(f"/approvals/{approval_request.pk}/").status_code == 404
    assert admin_client.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"}).status_code == 404
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


def test_application_admin_shows_the_ciba_inline(admin_client, agent):
    response = admin_client.get(f"/admin/oauth2_provider/application/{agent.application.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "CIBA client settings" in html
    assert "Identity (RFC 7523, CIBA Core §7.1.1, FAPI-CIBA)" in html
    assert 'name="ciba-0-jwks_uri"' in html
    assert 'name="ciba-0-fapi_ciba"' in html
    assert 'name="ciba-0-token_exchange_enabled"' in html
    assert 'name="ciba-0-backchannel_token_delivery_mode"' in html
    assert 'name="ciba-0-token_endpoint_auth_method"' in html
    assert 'name="ciba-0-refresh_tokens"' in html


def test_application_changelist_shows_the_delivery_mode(admin_client, agent, make_agent):
    make_agent(name="Not a CIBA client", ciba=False)
    response = admin_client.get("/admin/oauth2_provider/application/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "CIBA delivery" in html
    assert ">poll<" in html


# --- prompts: deliveries and devices ----------------------------------------------------------------------------------


def test_request_page_shows_each_prompt_delivery(admin_client, agent, approver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the prompt task runs once the request commits
        approval_request = factories.make_approval_request(approver, agent, binding_message="Ship 3 parcels")

    response = admin_client.get(change_url(approval_request))

    assert response.status_code == 200
    # Each attempt is a line of the page's timeline (authz.review.timeline), with the provider's answer.
    [row] = Delivery.objects.filter(request=approval_request)
    assert (row.channel, row.status, row.attempt) == ("locmem", Delivery.Status.SENT, 1)
    html = response.content.decode()
    assert "Prompt attempt 1: locmem" in html
    assert "Accepted by the provider" in html


def test_deliveries_are_listed_read_only(admin_client, agent, approver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        approval_request = factories.make_approval_request(approver, agent)
    delivery = Delivery.objects.get(request=approval_request)

    assert admin_client.get("/admin/approvals/delivery/?status=sent").status_code == 200
    page = admin_client.get(f"/admin/approvals/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/approvals/delivery/{delivery.pk}/delete/", {"post": "yes"}).status_code == 403


def test_approver_page_shows_devices_and_why_sms_is_off(admin_client, approver):
    PushSubscription.objects.create(
        approver=approver, endpoint="https://fcm.googleapis.com/fcm/send/abc", p256dh="k", auth="a", user_agent="Pixel"
    )
    Approver.objects.filter(pk=approver.pk).update(
        phone_disabled_at=timezone.now(), phone_disabled_reason="Twilio error 21610 (HTTP 400)"
    )

    response = admin_client.get(f"/admin/approvals/approver/{approver.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "fcm.googleapis.com" in html and "Pixel" in html
    assert "Twilio error 21610 (HTTP 400)" in html


def test_changing_the_phone_in_admin_enables_sms_again(admin_client, approver):
    Approver.objects.filter(pk=approver.pk).update(phone_disabled_at=timezone.now(), phone_disabled_reason="gone")
    form = {
        "user": approver.user.pk,
        "phone_number": "+14155550199",
        "accepting_requests": "on",
        "push_subscriptions-TOTAL_FORMS": "0",
        "push_subscriptions-INITIAL_FORMS": "0",
    }

    response = admin_client.post(f"/admin/approvals/approver/{approver.pk}/change/", form)

    assert response.status_code == 302, response.content
    approver.refresh_from_db()
    assert (approver.phone_number, approver.phone_disabled_at, approver.phone_disabled_reason) == (
        "+14155550199",
        None,
        "",
    )


def test_client_prompt_channels_must_be_configured_ones(agent):
    ciba = agent.application.ciba
    ciba.prompt_channels = "locmem"
    ciba.clean()

    ciba.prompt_channels = "locmem,carrier-pigeon"
    with pytest.raises(ValidationError, match="carrier-pigeon"):
        ciba.clean()
