"""Issue 18, item 6: the records the system keeps (audit events, agent and approver events, prompt deliveries,
client notifications and their attempts) cannot be added, changed or deleted in admin by anyone, superusers included."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import models
from django.test import RequestFactory
from django.utils import timezone

from approvals.models import ApprovalRequest, ApproverEvent, AuditEvent, Delivery
from authz.models import AgentEvent, Notification, NotificationAttempt
from tests import factories

pytestmark = pytest.mark.django_db

APPEND_ONLY = (AuditEvent, AgentEvent, ApproverEvent, Delivery, Notification, NotificationAttempt)


@pytest.fixture
def records(agent, approver) -> dict[type[models.Model], models.Model]:
    approval_request = factories.make_approval_request(approver, agent)
    now = timezone.now()
    notification = Notification.objects.create(
        request=approval_request, mode="ping", outcome="denied", deadline=now + timedelta(minutes=10), due_at=now
    )
    return {
        AuditEvent: approval_request.events.get(),
        AgentEvent: AgentEvent.objects.create(client=agent.application.ciba, kind="suspended", detail={"why": "x"}),
        ApproverEvent: ApproverEvent.objects.create(approver=approver, kind="lockout_cleared", detail={"what": "x"}),
        Delivery: Delivery.objects.create(request=approval_request, channel="sms", destination="sms:+14155550123"),
        Notification: notification,
        NotificationAttempt: NotificationAttempt.objects.create(notification=notification, attempt=1),
    }


def url(model: type[models.Model], suffix: str) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/{suffix}"


def snapshot(record: models.Model) -> dict[str, Any]:
    return type(record).objects.filter(pk=record.pk).values().get()


@pytest.mark.parametrize("model", APPEND_ONLY, ids=lambda model: model.__name__)
def test_a_superuser_cannot_add_change_or_delete(admin_client, admin_user, records, model):
    record = records[model]
    before = snapshot(record)
    registered = model in admin.site._registry
    refused = (403,) if registered else (404,)

    # Adding.
    assert admin_client.get(url(model, "add/")).status_code in refused
    assert admin_client.post(url(model, "add/"), {"kind": "approved"}).status_code in refused
    # Deleting, one and in bulk.
    assert admin_client.get(url(model, f"{record.pk}/delete/")).status_code in refused
    assert admin_client.post(url(model, f"{record.pk}/delete/"), {"post": "yes"}).status_code in refused
    bulk = admin_client.post(
        url(model, ""), {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
    )
    assert bulk.status_code in (200, 302, 404)
    # Changing: the page is for reading, and a POST is refused.
    page = admin_client.get(url(model, f"{record.pk}/change/"))
    changed = admin_client.post(url(model, f"{record.pk}/change/"), {"kind": "approved", "_save": "Save"})
    if registered:
        assert page.status_code == 200
        assert page.context["has_change_permission"] is False
        assert page.context["has_delete_permission"] is False
        html = page.content.decode()
        assert 'name="_save"' not in html and 'name="_continue"' not in html and "/delete/" not in html
        assert changed.status_code == 403
    else:
        assert page.status_code == 404 and changed.status_code == 404

    assert snapshot(record) == before

    if registered:
        model_admin = admin.site._registry[model]
        request = RequestFactory().get(url(model, ""))
        request.user = admin_user
        assert model_admin.has_add_permission(request) is False
        assert model_admin.has_change_permission(request, record) is False
        assert model_admin.has_delete_permission(request, record) is False
        assert "delete_selected" not in model_admin.get_actions(request)
        listing = admin_client.get(url(model, ""))
        assert listing.status_code == 200
        assert "delete_selected" not in listing.content.decode()


def test_the_inlines_of_these_records_are_read_only_too(admin_user):
    """Their rows may also show inside other pages (a notification's attempts; the request's trail and prompts)."""
    from approvals.admin import AuditEventInline, DeliveryInline
    from authz.admin import NotificationAttemptInline, NotificationInline

    request = RequestFactory().get("/admin/")
    request.user = admin_user
    inlines = {AuditEventInline, DeliveryInline, NotificationInline, NotificationAttemptInline}
    for parent_admin in admin.site._registry.values():
        inlines |= {inline for inline in parent_admin.inlines if inline.model in APPEND_ONLY}
    for inline_class in inlines:
        inline = inline_class(ApprovalRequest, admin.site)
        assert inline.has_add_permission(request, None) is False, inline_class
        assert inline.has_change_permission(request, None) is False, inline_class
        assert inline.can_delete is False or inline.has_delete_permission(request, None) is False, inline_class
