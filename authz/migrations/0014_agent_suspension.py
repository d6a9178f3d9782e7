"""Issue 18: an administrator may suspend an agent (CibaClient.suspended_*, the suspend_cibaclient permission), and
what was done to an agent as a whole is kept as append-only AgentEvent rows."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0013_request_callbacks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="cibaclient",
            options={
                "permissions": [("suspend_cibaclient", "Can suspend and resume agents")],
                "verbose_name": "CIBA client settings",
                "verbose_name_plural": "CIBA client settings",
            },
        ),
        migrations.AddField(
            model_name="cibaclient",
            name="suspended_at",
            field=models.DateTimeField(blank=True, editable=False, null=True, verbose_name="suspended at"),
        ),
        migrations.AddField(
            model_name="cibaclient",
            name="suspended_by",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="suspended by",
            ),
        ),
        migrations.AddField(
            model_name="cibaclient",
            name="suspension_reason",
            field=models.CharField(blank=True, editable=False, max_length=255, verbose_name="suspension reason"),
        ),
        migrations.CreateModel(
            name="AgentEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("suspended", "Suspended"), ("resumed", "Resumed")], max_length=16)),
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
                    "client",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="events", to="authz.cibaclient"
                    ),
                ),
            ],
            options={
                "verbose_name": "agent event",
                "ordering": ["-at", "-id"],
                "indexes": [models.Index(fields=["client", "-at"], name="authz_agentevent_client_at")],
            },
        ),
    ]
