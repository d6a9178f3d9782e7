"""Client notifications (CIBA Core 10.2, 10.3) move here from approvals, keeping every row: authz takes over the
state of approvals' two models as they stand at approvals 0007, then renames their tables, their due index and
their content types (so that permissions granted on them keep working)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

MODELS = ("notification", "notificationattempt")


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label="authz", model=model).exists():
            ContentType.objects.filter(app_label="approvals", model=model).update(app_label="authz")


def return_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label="approvals", model=model).exists():
            ContentType.objects.filter(app_label="authz", model=model).update(app_label="approvals")


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0010_display_templates_as_data"),
        ("approvals", "0007_request_notification_binding"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Notification",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("mode", models.CharField(choices=[("ping", "ping"), ("push", "push")], max_length=8)),
                        ("outcome", models.CharField(max_length=16)),
                        ("status", models.CharField(choices=[("pending", "Pending"), ("delivered", "Delivered"), ("undeliverable", "Undeliverable")], default="pending", max_length=16)),
                        ("payload_encrypted", models.TextField(blank=True, editable=False)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("deadline", models.DateTimeField()),
                        ("due_at", models.DateTimeField(editable=False)),
                        ("claimed_until", models.DateTimeField(blank=True, editable=False, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("error", models.CharField(blank=True, max_length=500)),
                        ("request", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="notification", to="approvals.approvalrequest")),
                    ],
                    options={
                        "verbose_name": "client notification",
                        "ordering": ["-created_at"],
                        "db_table": "approvals_notification",
                        "indexes": [
                            models.Index(condition=models.Q(("status", "pending")), fields=["due_at"], name="approvals_notify_due_idx"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="NotificationAttempt",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("attempt", models.PositiveSmallIntegerField()),
                        ("status", models.CharField(choices=[("sending", "Sending"), ("delivered", "Delivered (2xx)"), ("failed", "Failed (retried)"), ("rejected", "Rejected (not retried)")], default="sending", max_length=16)),
                        ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("latency_ms", models.PositiveIntegerField(blank=True, null=True)),
                        ("error", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("notification", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="attempt_log", to="authz.notification")),
                    ],
                    options={
                        "verbose_name": "notification attempt",
                        "ordering": ["created_at"],
                        "db_table": "approvals_notificationattempt",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="notification", table=None),
        migrations.AlterModelTable(name="notificationattempt", table=None),
        migrations.RenameIndex(model_name="notification", new_name="authz_notify_due_idx", old_name="approvals_notify_due_idx"),
        migrations.RunPython(move_content_types, return_content_types),
    ]
