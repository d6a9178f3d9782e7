"""Issue 18 item 4: an approver's page in admin (phone, push devices, recent requests, lockouts) and clearing a
lockout, per role, recorded as an ApproverEvent with the administrator."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import lockouts, services
from approvals.conf import approvals_settings
from approvals.display import admin_datetime
from approvals.models import Approver, ApproverEvent, PushSubscription
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

APPROVERS = "/admin/approvals/approver/"


def staff(*groups: str, name: str) -> tuple[Client, object]:
    user = factories.make_staff(name, *groups)
    http = Client()
    http.force_login(user)
    return http, user


def page_of(approver: Approver) -> str:
    return f"{APPROVERS}{approver.pk}/change/"


def clear_url(approver: Approver) -> str:
    return f"{APPROVERS}{approver.pk}/clear-lockouts/"


def lock_user_code(approver: Approver) -> None:
    services.approver_set_user_code(approver=approver, user_code="4711")
    for _ in range(approvals_settings.USER_CODE_MAX_FAILURES):
        assert not services.approver_check_user_code(approver=approver, user_code="0000")
    # Locked: even the right code is refused now.
    assert not services.approver_check_user_code(approver=approver, user_code="4711")


def test_the_page_shows_a_lockout_until_when_and_the_operator_clears_it(approver):
    lock_user_code(approver)
    assert not services.approver_check_step_up_password(user=approver.user, password="wrong")
    http, operator = staff("operator", name="ops")

    page = http.get(page_of(approver)).content.decode()

    [user_code] = [lockout for lockout in lockouts.approver_lockouts(approver) if lockout.kind == lockouts.USER_CODE]
    assert user_code.locked and user_code.until is not None
    assert user_code.until - timezone.now() <= timedelta(seconds=approvals_settings.USER_CODE_LOCKOUT_SECONDS)
    assert f"locked until {admin_datetime(user_code.until)}" in page
    assert "counting until" in page  # the password: one wrong guess, not locked
    assert f"{approvals_settings.USER_CODE_MAX_FAILURES} of {approvals_settings.USER_CODE_MAX_FAILURES}" in page
    assert f'href="{clear_url(approver)}"' in page

    confirm = http.get(clear_url(approver))
    assert confirm.status_code == 200 and "Yes, clear them" in confirm.content.decode()
    assert lockouts.approver_lockouts(approver)[0].locked  # nothing cleared by looking

    done = http.post(clear_url(approver), follow=True)

    assert done.redirect_chain[-1][0] == page_of(approver)
    messages = [str(m) for m in done.context["messages"]]
    assert messages == ["Cleared for alice: user code, password (sign-in and step-up)."]
    assert all(lockout.failures == 0 for lockout in lockouts.approver_lockouts(approver))
    assert services.approver_check_user_code(approver=approver, user_code="4711")
    event = ApproverEvent.objects.get(approver=approver)
    assert (event.kind, event.actor) == (ApproverEvent.Kind.LOCKOUT_CLEARED, operator)
    assert event.detail == {
        "cleared": ["user_code", "password"],
        # The refused guess at the limit gave its slot back (approvals.attempts).
        "failures": {"user_code": approvals_settings.USER_CODE_MAX_FAILURES, "password": 1},
        "locked": ["user_code"],
    }
    assert "lockouts cleared" in done.content.decode().lower() and "ops" in done.content.decode()

    # Nothing left to clear: nothing recorded.
    http.post(clear_url(approver))
    assert ApproverEvent.objects.count() == 1


def test_the_list_action_clears_lockouts_for_an_operator(approver):
    lock_user_code(approver)
    http, operator = staff("operator", name="ops")

    response = http.post(
        APPROVERS, {"action": "clear_lockouts", helpers.ACTION_CHECKBOX_NAME: [approver.pk]}, follow=True
    )

    assert [str(m) for m in response.context["messages"]] == ["Cleared for alice: user code."]
    assert not lockouts.approver_lockouts(approver)[0].locked
    assert ApproverEvent.objects.get(approver=approver).actor == operator


def test_a_viewer_sees_the_lockout_but_cannot_clear_it(approver):
    lock_user_code(approver)
    http, _viewer = staff("viewer", name="watcher")

    page = http.get(page_of(approver)).content.decode()
    assert "locked until" in page
    assert "clear-lockouts" not in page
    assert http.get(clear_url(approver)).status_code == 403
    assert http.post(clear_url(approver)).status_code == 403
    listing = http.get(APPROVERS).content.decode()
    assert "clear_lockouts" not in listing
    http.post(APPROVERS, {"action": "clear_lockouts", helpers.ACTION_CHECKBOX_NAME: [approver.pk]})

    assert lockouts.approver_lockouts(approver)[0].locked
    assert not ApproverEvent.objects.exists()


def test_staff_without_a_role_gets_nothing(approver):
    lock_user_code(approver)
    http, _user = staff(name="plain")
    assert http.get(page_of(approver)).status_code == 403
    assert http.post(clear_url(approver)).status_code == 403
    assert lockouts.approver_lockouts(approver)[0].locked


def test_an_unknown_approver_is_a_404_not_a_500(approver):
    http, _operator = staff("operator", name="ops")
    assert http.get(f"{APPROVERS}999999/clear-lockouts/").status_code == 404
    assert http.post(f"{APPROVERS}not-a-number/clear-lockouts/").status_code == 404


def test_the_page_lists_devices_phone_and_the_last_ten_requests(approver, agent):
    now = timezone.now()
    PushSubscription.objects.create(
        approver=approver,
        endpoint="https://fcm.googleapis.com/fcm/send/abc",
        p256dh="k",
        auth="a",
        user_agent="Pixel",
        last_success_at=now - timedelta(minutes=5),
    )
    PushSubscription.objects.create(
        approver=approver,
        endpoint="https://updates.push.services.mozilla.com/wpush/v2/gone",
        p256dh="k",
        auth="a",
        user_agent="Firefox",
        disabled_at=now - timedelta(days=1),
        disabled_reason="HTTP 410 from the push service",
    )
    requests = [
        factories.make_approval_request(approver, agent, created_ago=12 - n, binding_message=f"Order {n}")
        for n in range(12)
    ]
    http, _viewer = staff("viewer", name="watcher")

    page = http.get(page_of(approver)).content.decode()

    assert "+14155550123" in page
    assert admin_datetime(now - timedelta(minutes=5)) in page and "HTTP 410 from the push service" in page
    listed = re.findall(r'href="/admin/approvals/approvalrequest/([0-9a-f-]{36})/change/"', page)
    assert listed == [str(r.pk) for r in reversed(requests)][:10]
    assert "Order 11" in page and "Order 1<" not in page


def test_the_approver_list_counts_devices_without_a_query_per_row(approver):
    http, _viewer = staff("viewer", name="watcher")
    http.get(APPROVERS)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert http.get(APPROVERS).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for n in range(8):
        other = factories.make_approver(f"person{n}")
        PushSubscription.objects.create(
            approver=other, endpoint=f"https://fcm.googleapis.com/fcm/send/{n}", p256dh="k", auth="a"
        )
    assert queries() == few


def test_approver_events_are_append_only_even_for_a_superuser(approver):
    lock_user_code(approver)
    lockouts.approver_clear_lockouts(approver=approver, actor=None)
    event = ApproverEvent.objects.get()
    http = Client()
    http.force_login(factories.make_staff("root", superuser=True))
    base = "/admin/approvals/approverevent/"

    assert http.get(base).status_code == 200
    page = http.get(f"{base}{event.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert http.post(f"{base}{event.pk}/change/", {"kind": "lockout_cleared"}).status_code == 403
    assert http.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert http.get(f"{base}add/").status_code == 403
    assert "delete_selected" not in http.get(base).content.decode()
    assert ApproverEvent.objects.filter(pk=event.pk).exists()
