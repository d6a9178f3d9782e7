from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings


class Approver(models.Model):
    """A person who can be asked to approve agents' requests, and how to reach them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approver")
    # E.164, normalised by approvals.phones; login_hint may name the approver by it.
    phone_number = models.CharField(_("phone number"), max_length=20, blank=True, db_index=True)
    # CIBA Core §7.1 user_code: chosen by the approver, stored with Django's password hasher.
    user_code_hash = models.CharField(max_length=128, blank=True, editable=False)
    accepting_requests = models.BooleanField(
        _("accepting requests"),
        default=True,
        help_text=_("When off, agents' requests for this person are refused with access_denied."),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("approver")

    def __str__(self) -> str:
        return self.user.get_username()

    @property
    def has_user_code(self) -> bool:
        return bool(self.user_code_hash)


class ApprovalRequest(models.Model):
    """One agent's request for one person's approval: the CIBA authentication request and its outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        APPROVED = "approved", _("Approved")
        DENIED = "denied", _("Denied")
        EXPIRED = "expired", _("Expired")
        CANCELLED = "cancelled", _("Cancelled")
        CONSUMED = "consumed", _("Tokens issued")

    class HintType(models.TextChoices):
        LOGIN_HINT = "login_hint", "login_hint"
        ID_TOKEN_HINT = "id_token_hint", "id_token_hint"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    auth_req_id = models.CharField(max_length=128, unique=True, editable=False)
    client = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="approval_requests"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approval_requests")
    scope = models.TextField()
    binding_message = models.CharField(max_length=64, blank=True)
    acr_values = models.CharField(max_length=255, blank=True)
    hint_type = models.CharField(max_length=16, choices=HintType.choices)
    requested_expiry = models.PositiveIntegerField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    interval = models.PositiveIntegerField(default=5)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    prompted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    # When and how strongly the approver had authenticated when deciding (ID token auth_time / acr).
    auth_time = models.DateTimeField(null=True, blank=True)
    acr = models.CharField(max_length=64, blank=True)
    access_token = models.ForeignKey(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        verbose_name = _("approval request")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "status", "expires_at"]),
            # The expiry sweep reads only requests that can still expire, not the whole history.
            models.Index(
                fields=["expires_at"],
                name="approvals_expirable_idx",
                condition=models.Q(status__in=["pending", "approved", "denied"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client} → {self.user} ({self.status})"

    def effective_status(self, now: datetime | None = None) -> str:
        return effective_status(self.status, self.expires_at, now or timezone.now())

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


def effective_status(status: str, expires_at: datetime, now: datetime) -> str:
    """The status as of `now`: an undecided (or unredeemed) request past its expiry is EXPIRED."""
    if status in _EXPIRABLE and now >= expires_at:
        return ApprovalRequest.Status.EXPIRED
    return status


_EXPIRABLE = frozenset((ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED, ApprovalRequest.Status.DENIED))


class AuditEvent(models.Model):
    """An append-only record of what happened to an approval request, written with each transition."""

    class Kind(models.TextChoices):
        CREATED = "created", _("Created")
        PROMPTED = "prompted", _("Prompt sent")
        PROMPT_FAILED = "prompt_failed", _("Prompt failed")
        APPROVED = "approved", _("Approved")
        DENIED = "denied", _("Denied")
        EXPIRED = "expired", _("Expired")
        CANCELLED = "cancelled", _("Cancelled")
        CONSUMED = "consumed", _("Tokens issued")

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"
