"""What the approver's JSON endpoints (approvals.api) answer: their pending requests and their Web Push devices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from rest_framework import serializers

from approvals import selectors
from approvals.models import ApprovalRequest, PushSubscription


class IsoDateTimeField(serializers.Field[datetime, Any, str, Any]):
    """A datetime as isoformat() writes it, offset included; DRF's DateTimeField would write UTC as "Z"."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class PendingRequestSerializer(serializers.Serializer[Any]):
    """One pending request as the inbox lists it; never its auth_req_id, which is the agent's to poll with."""

    id = serializers.CharField(source="pk")
    agent = serializers.SerializerMethodField()
    binding_message = serializers.CharField()
    scopes = serializers.SerializerMethodField()
    expires_at = IsoDateTimeField()
    url = serializers.SerializerMethodField()

    def get_agent(self, approval_request: ApprovalRequest) -> str:
        name: str = approval_request.client.name or approval_request.client.client_id
        return name

    def get_scopes(self, approval_request: ApprovalRequest) -> list[str]:
        return [description for _scope, description in selectors.scope_descriptions(approval_request.scopes)]

    def get_url(self, approval_request: ApprovalRequest) -> str:
        return reverse("approvals:detail", args=[approval_request.pk])


class DeviceSerializer(serializers.Serializer[Any]):
    """One of the approver's Web Push subscriptions, without its endpoint or keys."""

    id = serializers.IntegerField()
    service = serializers.CharField(source="service_host")
    user_agent = serializers.CharField()
    created_at = IsoDateTimeField()
    last_success_at = IsoDateTimeField()
    disabled = serializers.SerializerMethodField()

    def get_disabled(self, subscription: PushSubscription) -> bool:
        return subscription.disabled_at is not None
