"""Issue 14: registration updates stay within an administrator's limits, and callbacks go where a request asked.

- CibaClient.admin_limits: what a client's own registration updates (RFC 7592) may not exceed. Nobody can tell
  which clients an administrator had already restricted, so every existing client starts with its values as they are
  now, as if an administrator had saved it at the upgrade.
- ApprovalRequest.notification_mode and notification_endpoint (approvals 0007): every request that may still be
  called back is bound to its client's ping or push registration as it is now.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.models import Q
from django.utils import timezone

LIMITED_FIELDS = (
    "ciba_enabled",
    "refresh_tokens",
    "client_credentials_enabled",
    "token_exchange_enabled",
    "allowed_scopes",
    "authorization_details_types",
    "token_endpoint_auth_method",
    "token_endpoint_auth_signing_alg",
    "backchannel_authentication_request_signing_alg",
    "backchannel_user_code_parameter",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    CibaClient = apps.get_model("authz", "CibaClient")
    ApprovalRequest = apps.get_model("approvals", "ApprovalRequest")
    now = timezone.now()
    for ciba in CibaClient.objects.all().iterator():
        limits = {name: getattr(ciba, name) for name in LIMITED_FIELDS}
        CibaClient.objects.filter(pk=ciba.pk).update(admin_limits=limits, admin_limits_at=now)
        if ciba.backchannel_token_delivery_mode in ("ping", "push"):
            ApprovalRequest.objects.filter(client_id=ciba.application_id).filter(
                Q(status="pending") | Q(notification__status="pending")
            ).update(
                notification_mode=ciba.backchannel_token_delivery_mode,
                notification_endpoint=ciba.backchannel_client_notification_endpoint,
            )


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0007_bound_example_detail_strings"),
        ("approvals", "0007_request_notification_binding"),
    ]

    operations = [
        migrations.AddField(
            model_name="cibaclient",
            name="admin_limits",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="cibaclient",
            name="admin_limits_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text=(
                    "When an administrator last saved this client. Its registration updates may since narrow what it "
                    "may do (grants, scopes, authorization details types) but not widen it, nor drop private_key_jwt, "
                    "signed requests or user codes required then."
                ),
                null=True,
                verbose_name="limits for registration updates set",
            ),
        ),
        migrations.AlterField(
            model_name="cibaclient",
            name="website_verified",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "Set only after checking that the client's operator controls the website and goes by this name; "
                    "approvers see it then. A registration update that changes the name or the website clears it."
                ),
                verbose_name="website verified",
            ),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
