"""What the review API (authz.review.api) and the audit export (authz.review.export) say of an audit event and of an
approval request: the same JSON object in both.

They read `values()` rows (the columns named in *_COLUMNS, joined in the one query of a page), not model instances.
Nothing secret is among those columns: no auth_req_id (the agent's credential for the tokens), no token or its
checksum, no client_notification_token (authz's RequestCallback, never read here).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import serializers

from approvals.models import effective_status
from approvals.serializers import IsoDateTimeField

_USERNAME = get_user_model().USERNAME_FIELD

AUDIT_EVENT_COLUMNS = (
    "id",
    "at",
    "kind",
    "request_id",
    "request__client__client_id",
    "request__client__name",
    f"request__user__{_USERNAME}",
    f"actor__{_USERNAME}",
    "detail",
)

APPROVAL_REQUEST_COLUMNS = (
    "id",
    "client__client_id",
    "client__name",
    f"user__{_USERNAME}",
    "scope",
    "binding_message",
    "acr_values",
    "hint_type",
    "authorization_details",
    "status",
    "created_at",
    "expires_at",
    "prompted_at",
    "prompt_failed_at",
    "prompt_channel",
    "decided_at",
    f"decided_by__{_USERNAME}",
    "decided_via",
    "consumed_at",
    "auth_time",
    "acr",
)


class AuditEventSerializer(serializers.Serializer[Any]):
    """One event of a request's trail. `actor` is the person or admin who acted, null for the system or the agent."""

    id = serializers.IntegerField()
    at = IsoDateTimeField()
    kind = serializers.CharField()
    request = serializers.CharField(source="request_id")
    agent = serializers.CharField(source="request__client__client_id")
    agent_name = serializers.CharField(source="request__client__name")
    approver = serializers.CharField(source=f"request__user__{_USERNAME}")
    actor = serializers.CharField(source=f"actor__{_USERNAME}", allow_null=True)
    detail = serializers.JSONField()


class ApprovalRequestSerializer(serializers.Serializer[Any]):
    """One approval request. `status` is what is stored; `effective_status` what the agent is told now (an undecided
    or unredeemed request past its expiry is expired). Null datetimes (not prompted, not decided) are null."""

    id = serializers.CharField()
    agent = serializers.CharField(source="client__client_id")
    agent_name = serializers.CharField(source="client__name")
    approver = serializers.CharField(source=f"user__{_USERNAME}")
    scope = serializers.SerializerMethodField()
    binding_message = serializers.CharField()
    acr_values = serializers.CharField()
    hint_type = serializers.CharField()
    authorization_details = serializers.JSONField()
    status = serializers.CharField()
    effective_status = serializers.SerializerMethodField()
    created_at = IsoDateTimeField()
    expires_at = IsoDateTimeField()
    prompted_at = IsoDateTimeField()
    prompt_failed_at = IsoDateTimeField()
    prompt_channel = serializers.CharField()
    decided_at = IsoDateTimeField()
    decided_by = serializers.CharField(source=f"decided_by__{_USERNAME}", allow_null=True)
    decided_via = serializers.CharField()
    consumed_at = IsoDateTimeField()
    auth_time = IsoDateTimeField()
    acr = serializers.CharField()

    def get_scope(self, row: dict[str, Any]) -> list[str]:
        return str(row["scope"]).split()

    def get_effective_status(self, row: dict[str, Any]) -> str:
        now = self.context.get("now") or timezone.now()
        return effective_status(row["status"], row["expires_at"], now)
