"""Migrations keep data: a database populated at an earlier head migrates forward with its rows intact."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

# The last migrations before client notifications moved from approvals to authz (issue 16).
BEFORE_THE_MOVE = [("approvals", "0007_request_notification_binding"), ("authz", "0010_display_templates_as_data")]
AFTER_THE_MOVE = [("approvals", "0008_notifications_leave_approvals"), ("authz", "0011_client_notifications")]


def migrate(nodes: list[tuple[str, str]]):
    """Migrate approvals and authz to `nodes` and every other app to its head; the models as they are then."""
    executor = MigrationExecutor(connection)
    apps = {app for app, _ in nodes}
    targets = [*nodes, *(leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] not in apps)]
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def leaf_targets() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def back_to_head():
    yield
    MigrationExecutor(connection).migrate(leaf_targets())  # whatever happened, the rest of the suite needs the head


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_client_notifications_move_to_authz_with_every_row(back_to_head):
    old = migrate(BEFORE_THE_MOVE)
    now = timezone.now()
    user = old.get_model("auth", "User").objects.create(username="mover")
    client = old.get_model("oauth2_provider", "Application").objects.create(
        name="Moving agent", client_type="confidential", authorization_grant_type="client-credentials"
    )
    ApprovalRequest = old.get_model("approvals", "ApprovalRequest")
    OldNotification = old.get_model("approvals", "Notification")
    OldAttempt = old.get_model("approvals", "NotificationAttempt")
    requests = [
        ApprovalRequest.objects.create(
            auth_req_id=f"moving-{n}",
            client=client,
            user=user,
            scope="openid",
            hint_type="login_hint",
            status="denied",
            expires_at=now + timedelta(minutes=5),
            notification_mode=("ping", "push", "")[n],
            notification_endpoint=("https://agent.example/cb", "https://agent.example/push", "")[n],
            client_notification_token=("token-0", "token-1", "")[n],
        )
        for n in range(3)
    ]
    kept = {}
    for n, approval_request in enumerate(requests):
        notification = OldNotification.objects.create(
            request=approval_request,
            mode="ping",
            outcome="denied",
            status=("pending", "delivered", "undeliverable")[n],
            attempts=n,
            deadline=now + timedelta(minutes=10),
            due_at=now,
            error=f"error {n}",
        )
        for attempt in range(1, n + 1):
            OldAttempt.objects.create(notification=notification, attempt=attempt, status="failed", http_status=503)
        kept[notification.pk] = (approval_request.pk, notification.status, n)
    ContentType = old.get_model("contenttypes", "ContentType")
    ContentType.objects.get_or_create(app_label="approvals", model="notification")

    new = migrate(AFTER_THE_MOVE)
    Notification = new.get_model("authz", "Notification")
    moved = {n.pk: (n.request_id, n.status, n.attempts) for n in Notification.objects.all()}
    assert moved == kept
    attempts = new.get_model("authz", "NotificationAttempt").objects.order_by("notification_id", "attempt")
    assert [(a.notification_id, a.attempt, a.http_status) for a in attempts] == [
        (pk, attempt, 503) for pk, (_, _, n) in sorted(kept.items()) for attempt in range(1, n + 1)
    ]
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        constraints = connection.introspection.get_constraints(cursor, "authz_notification")
    assert "authz_notification" in tables and "authz_notificationattempt" in tables
    assert "approvals_notification" not in tables and "approvals_notificationattempt" not in tables
    assert "authz_notify_due_idx" in constraints
    # Permissions granted on the model follow it: its content type moved instead of a new one being made.
    assert new.get_model("contenttypes", "ContentType").objects.filter(app_label="authz", model="notification").count()
    assert not ContentType.objects.filter(app_label="approvals", model="notification").exists()
    # New rows get fresh ids after the moved ones (the sequence moved with the table).
    fresh = Notification.objects.create(
        request_id=new.get_model("approvals", "ApprovalRequest")
        .objects.create(
            auth_req_id="moving-after",
            client_id=client.pk,
            user_id=user.pk,
            scope="openid",
            hint_type="login_hint",
            expires_at=now + timedelta(minutes=5),
        )
        .pk,
        mode="ping",
        outcome="approved",
        deadline=now,
        due_at=now,
    )
    assert fresh.pk > max(kept)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_request_callbacks_leave_the_approval_request_with_every_value(back_to_head):
    old = migrate([("approvals", "0008_notifications_leave_approvals"), ("authz", "0012_token_details_related_name")])
    now = timezone.now()
    user = old.get_model("auth", "User").objects.create(username="binder")
    client = old.get_model("oauth2_provider", "Application").objects.create(
        name="Binding agent", client_type="confidential", authorization_grant_type="client-credentials"
    )
    ApprovalRequest = old.get_model("approvals", "ApprovalRequest")
    bound = {
        "poll": ("", "", ""),
        "ping": ("ping", "https://agent.example/ping", "ping-token"),
        "push": ("push", "https://agent.example/push", "x" * 1024),
    }
    ids = {
        name: ApprovalRequest.objects.create(
            auth_req_id=f"binding-{name}",
            client=client,
            user=user,
            scope="openid",
            hint_type="login_hint",
            expires_at=now + timedelta(minutes=5),
            notification_mode=mode,
            notification_endpoint=endpoint,
            client_notification_token=token,
        ).pk
        for name, (mode, endpoint, token) in bound.items()
    }

    new = migrate([("approvals", "0009_callbacks_leave_approval_requests"), ("authz", "0013_request_callbacks")])
    callbacks = {
        c.request_id: (c.mode, c.endpoint, c.token) for c in new.get_model("authz", "RequestCallback").objects.all()
    }
    assert callbacks == {ids["ping"]: bound["ping"], ids["push"]: bound["push"]}
    columns = {
        c.name for c in connection.introspection.get_table_description(connection.cursor(), "approvals_approvalrequest")
    }
    assert not {"notification_mode", "notification_endpoint", "client_notification_token"} & columns

    # And back: unapplying puts every value where it was.
    back = migrate([("approvals", "0008_notifications_leave_approvals"), ("authz", "0012_token_details_related_name")])
    rows = back.get_model("approvals", "ApprovalRequest").objects.values_list(
        "pk", "notification_mode", "notification_endpoint", "client_notification_token"
    )
    assert {pk: values for pk, *values in rows} == {ids[name]: list(values) for name, values in bound.items()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_review_fields_are_filled_from_the_audit_trail(back_to_head):
    # Issue 18: approvals 0010 fills decided_by, decided_via and prompt_channel for requests made before it.
    old = migrate([("approvals", "0009_callbacks_leave_approval_requests"), ("authz", "0013_request_callbacks")])
    now = timezone.now()
    User = old.get_model("auth", "User")
    person = User.objects.create(username="decider")
    admin = User.objects.create(username="operator-bob", is_staff=True)
    client = old.get_model("oauth2_provider", "Application").objects.create(
        name="Old agent", client_type="confidential", authorization_grant_type="client-credentials"
    )
    ApprovalRequest = old.get_model("approvals", "ApprovalRequest")
    AuditEvent = old.get_model("approvals", "AuditEvent")
    # name: (status, decided, the decision's event (kind, actor, detail), the prompt's channel)
    cases = {
        "page": ("approved", True, ("approved", person, {"acr": "x"}), "sms"),
        "link": ("denied", True, ("denied", person, {"acr": "x", "link": True}), ""),
        "automated": ("consumed", True, ("approved", None, {"automated_by": "conformance"}), "webpush"),
        "admin": ("cancelled", True, ("cancelled", admin, {}), ""),
        "expiry": ("expired", False, ("expired", None, {}), ""),
        "pending": ("pending", False, None, ""),
    }
    ids = {}
    for name, (status, decided, event, channel) in cases.items():
        request = ApprovalRequest.objects.create(
            auth_req_id=f"review-{name}",
            client=client,
            user=person,
            scope="openid",
            hint_type="login_hint",
            status=status,
            expires_at=now + timedelta(minutes=5),
            decided_at=now if decided else None,
            prompted_at=now if channel else None,
        )
        AuditEvent.objects.create(request=request, kind="created", at=now, detail={})
        if channel:
            AuditEvent.objects.create(request=request, kind="prompted", at=now, detail={"channel": channel})
        if event:
            kind, actor, detail = event
            AuditEvent.objects.create(request=request, kind=kind, actor=actor, at=now, detail=detail)
        ids[request.pk] = name

    new = migrate([("approvals", "0010_review_fields"), ("authz", "0013_request_callbacks")])

    filled = {
        ids[pk]: (decided_by, via, channel)
        for pk, decided_by, via, channel in new.get_model("approvals", "ApprovalRequest").objects.values_list(
            "pk", "decided_by", "decided_via", "prompt_channel"
        )
    }
    assert filled == {
        "page": (person.pk, "page", "sms"),
        "link": (person.pk, "link", ""),
        "automated": (None, "automated", "webpush"),
        "admin": (admin.pk, "admin", ""),
        "expiry": (None, "expiry", ""),
        "pending": (None, "", ""),
    }
