from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone
from oauth2_provider.settings import oauth2_settings

from .models import ApprovalRequest


def approval_requests_pending_for(*, user: AbstractBaseUser, now: datetime | None = None) -> QuerySet[ApprovalRequest]:
    now = now or timezone.now()
    return (
        ApprovalRequest.objects.filter(user=user, status=ApprovalRequest.Status.PENDING, expires_at__gt=now)
        .select_related("client")
        .order_by("-created_at")
    )


def scope_descriptions(scopes: list[str]) -> list[tuple[str, str]]:
    """Each scope with the human description the server registered for it."""
    known = oauth2_settings.SCOPES
    return [(scope, str(known.get(scope, scope))) for scope in scopes]
