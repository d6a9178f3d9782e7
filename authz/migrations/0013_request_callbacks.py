"""The callback a ping or push client registered for a request moves from the approval request (three columns of
approvals') to RequestCallback here, row for row, before approvals drops the columns: run_before orders it, so that
approvals' migrations never name this app."""

import django.db.models.deletion
from django.db import migrations, models


def copy_callbacks(apps, schema_editor):
    ApprovalRequest = apps.get_model("approvals", "ApprovalRequest")
    RequestCallback = apps.get_model("authz", "RequestCallback")
    bound = (
        ApprovalRequest.objects.exclude(notification_mode="")
        .values_list("pk", "notification_mode", "notification_endpoint", "client_notification_token")
        .iterator(chunk_size=2000)
    )
    batch = []
    for pk, mode, endpoint, token in bound:
        batch.append(RequestCallback(request_id=pk, mode=mode, endpoint=endpoint, token=token))
        if len(batch) == 2000:
            RequestCallback.objects.bulk_create(batch)
            batch = []
    RequestCallback.objects.bulk_create(batch)


def copy_back(apps, schema_editor):
    ApprovalRequest = apps.get_model("approvals", "ApprovalRequest")
    for callback in apps.get_model("authz", "RequestCallback").objects.iterator(chunk_size=2000):
        ApprovalRequest.objects.filter(pk=callback.request_id).update(
            notification_mode=callback.mode,
            notification_endpoint=callback.endpoint,
            client_notification_token=callback.token,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0008_notifications_leave_approvals"),
        ("authz", "0012_token_details_related_name"),
    ]
    run_before = [("approvals", "0009_callbacks_leave_approval_requests")]

    operations = [
        migrations.CreateModel(
            name="RequestCallback",
            fields=[
                (
                    "request",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="callback",
                        serialize=False,
                        to="approvals.approvalrequest",
                    ),
                ),
                ("mode", models.CharField(choices=[("ping", "ping"), ("push", "push")], editable=False, max_length=8)),
                ("endpoint", models.URLField(editable=False, max_length=2000)),
                (
                    "token",
                    models.CharField(editable=False, max_length=1024, verbose_name="client notification token"),
                ),
            ],
            options={"verbose_name": "request callback"},
        ),
        migrations.RunPython(copy_callbacks, copy_back),
    ]
