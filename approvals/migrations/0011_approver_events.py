"""Issue 18: what an administrator did to an approver (a lockout cleared), append-only, beside the requests' audit
trail."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0010_review_fields"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApproverEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("lockout_cleared", "Lockout cleared")], max_length=32)),
                ("at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("detail", models.JSONField(blank=True, default=dict)),
                (
                    "actor",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "approver",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="events", to="approvals.approver"
                    ),
                ),
            ],
            options={
                "verbose_name": "approver event",
                "ordering": ["-at", "-id"],
                "indexes": [models.Index(fields=["approver", "-at"], name="approvals_approverevent_at")],
            },
        ),
    ]
