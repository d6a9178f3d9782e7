"""Issue 18: the staff roles "viewer" and "operator" as groups (authz.review.roles), and the bearer tokens of the review
API (ReviewToken, stored as their SHA-256 only).

The groups' permissions are set from the table in authz.review.roles: here for the permissions that exist already (a
database migrated before), and after every migrate by the post_migrate receiver, which also covers permissions Django
creates only after this migration (a new database)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def create_roles(apps, schema_editor):
    from authz.review.roles import sync_roles

    sync_roles(apps, schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0014_agent_suspension"),
        ("approvals", "0010_review_fields"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Going back leaves the groups: a deployment may have put people in them.
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.CreateModel(
            name="ReviewToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.CharField(
                        blank=True, help_text="What the token is for.", max_length=100, verbose_name="name"
                    ),
                ),
                ("digest", models.CharField(editable=False, max_length=64, unique=True)),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False, verbose_name="created at"),
                ),
                ("expires_at", models.DateTimeField(blank=True, editable=False, null=True, verbose_name="expires at")),
                (
                    "last_used_at",
                    models.DateTimeField(blank=True, editable=False, null=True, verbose_name="last used at"),
                ),
                ("revoked_at", models.DateTimeField(blank=True, editable=False, null=True, verbose_name="revoked at")),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="review_tokens",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "review API token", "ordering": ["-created_at"]},
        ),
    ]
