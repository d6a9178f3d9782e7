from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

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
    # Set when SMS to the number failed for good (Twilio 21211 invalid, 21610 unsubscribed); cleared on a change.
    phone_disabled_at = models.DateTimeField(_("SMS disabled at"), null=True, blank=True)
    phone_disabled_reason = models.CharField(_("why SMS is disabled"), max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("approver")
        permissions = [("clear_lockout_approver", "Can clear an approver's lockouts")]

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

    class DecidedVia(models.TextChoices):
        PAGE = "page", _("signed-in page")
        LINK = "link", _("prompt's link")
        AUTOMATED = "automated", _("automated")
        ADMIN = "admin", _("admin")
        SUSPENSION = "suspension", _("agent suspended")
        DEREGISTRATION = "deregistration", _("agent deleted its registration")
        EXPIRY = "expiry", _("expired")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    auth_req_id = models.CharField(max_length=128, unique=True, editable=False)
    # No single-column indexes on client, user and status: the review indexes below lead with them (issue 18), and
    # each index more is paid on every bc-authorize INSERT.
    client = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="approval_requests",
        db_index=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approval_requests", db_index=False
    )
    scope = models.TextField()
    binding_message = models.CharField(max_length=64, blank=True)
    acr_values = models.CharField(max_length=255, blank=True)
    hint_type = models.CharField(max_length=16, choices=HintType.choices)
    requested_expiry = models.PositiveIntegerField(null=True, blank=True)
    # RFC 9396: what exactly the agent asks to do, validated against the registered types at bc-authorize; shown to the
    # person, and bound to the tokens issued on approval.
    authorization_details = models.JSONField(default=list, blank=True, editable=False)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    interval = models.PositiveIntegerField(default=5)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    prompted_at = models.DateTimeField(null=True, blank=True)
    # Prompting (approvals.prompts): every channel failed for good; one worker at a time holds the claim; the
    # sweeper re-enqueues a request still unprompted at prompt_due_at (e.g. the broker was down at creation).
    prompt_failed_at = models.DateTimeField(null=True, blank=True)
    prompt_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    prompt_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The prompt's link (approvals.links) signs the approver in once; after that the page needs their session.
    link_used_at = models.DateTimeField(null=True, blank=True, editable=False)
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
    # Review columns (issue 18), written in the same UPDATE as the transition or the prompt's record, so that the
    # admin's list shows who decided, how and through which channel without a query per row.
    # Unindexed: only deleting a user looks requests up by it; the list reads it with its row.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        verbose_name=_("decided by"),
    )
    decided_via = models.CharField(_("decided via"), max_length=16, choices=DecidedVia.choices, blank=True)
    # The channel of the first prompt a provider accepted ("sms", "webpush", "console"); blank until then.
    prompt_channel = models.CharField(_("prompt channel"), max_length=32, blank=True)

    class Meta:
        verbose_name = _("approval request")
        ordering = ["-created_at"]
        permissions = [
            ("cancel_approvalrequest", "Can cancel pending approval requests"),
            ("revoke_approvalrequest_tokens", "Can revoke the tokens of approval requests"),
        ]
        indexes = [
            models.Index(fields=["user", "status", "expires_at"]),
            # The admin's list (issue 18) at a million rows: each filter reads its newest rows along one index.
            models.Index(fields=["client", "-created_at"], name="approvals_client_created_idx"),
            models.Index(fields=["user", "-created_at"], name="approvals_user_created_idx"),
            models.Index(fields=["status", "-created_at"], name="approvals_status_created_idx"),
            models.Index(fields=["decided_via", "-created_at"], name="approvals_via_created_idx"),
            models.Index(fields=["prompt_channel", "-created_at"], name="approvals_channel_created_idx"),
            # The expiry sweep reads only requests that can still expire, not the whole history.
            models.Index(
                fields=["expires_at"],
                name="approvals_expirable_idx",
                condition=models.Q(status__in=["pending", "approved", "denied"]),
            ),
            models.Index(
                fields=["prompt_due_at"],
                name="approvals_unprompted_idx",
                condition=models.Q(status="pending", prompted_at__isnull=True, prompt_failed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        # No status here: admin pages show the effective status on their own, and a stored "consumed" beside it
        # confused (issue 18).
        return f"{self.short_id} · {self.client} → {self.user}"

    @property
    def short_id(self) -> str:
        """The id's first eight hex digits: enough to tell requests apart on a page, as Git abbreviates commits."""
        return str(self.pk)[:8]

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
        LINK_OPENED = "link_opened", _("Link opened")
        REFRESHED = "refreshed", _("Tokens refreshed")
        EXCHANGED = "exchanged", _("Tokens exchanged")
        REVOKED = "revoked", _("Tokens revoked")

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


class PushSubscription(models.Model):
    """A browser's Web Push subscription (the PushSubscription JSON of the Push API) for one approver."""

    approver = models.ForeignKey(Approver, on_delete=models.CASCADE, related_name="push_subscriptions")
    endpoint = models.URLField(max_length=2048, unique=True)
    p256dh = models.CharField(max_length=128)
    auth = models.CharField(max_length=64)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)
    # The push service said the subscription is gone (404/410) or refused it for good.
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = _("push subscription")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.approver} on {self.service_host}"

    @property
    def service_host(self) -> str:
        return urlsplit(self.endpoint).hostname or "?"

    @property
    def info(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


class Delivery(models.Model):
    """One attempt to send one prompt to one destination: written before the call and again after it."""

    class Status(models.TextChoices):
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Accepted by the provider")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed (retried)")
        REJECTED = "rejected", _("Rejected (not retried)")
        UNDELIVERED = "undelivered", _("Not delivered")
        INTERRUPTED = "interrupted", _("Interrupted (outcome unknown)")

    # The id is also the Twilio status callback's path: unguessable, and the callback is signed as well.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=32)
    # A stable name for where the prompt went (e.g. "sms:+14155550123", "webpush:17"), for idempotency.
    destination = models.CharField(max_length=255)
    subscription = models.ForeignKey(PushSubscription, on_delete=models.SET_NULL, null=True, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SENDING)
    provider_id = models.CharField(max_length=255, blank=True)
    provider_status = models.CharField(max_length=32, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("prompt delivery")
        verbose_name_plural = _("prompt deliveries")
        ordering = ["created_at"]
        indexes = [models.Index(fields=["request", "destination", "status"])]

    def __str__(self) -> str:
        return f"{self.channel} to {self.destination}: {self.status}"

    @property
    def latency_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)


class ApproverEvent(models.Model):
    """An append-only record of what an administrator did to an approver rather than to one request (issue 18):
    AuditEvent needs a request, and Django's LogEntry is neither append-only nor part of the review. Written by the
    service that does it (approvals.lockouts), in its transaction; never changed or deleted in admin."""

    class Kind(models.TextChoices):
        LOCKOUT_CLEARED = "lockout_cleared", _("Lockout cleared")

    approver = models.ForeignKey(Approver, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("approver event")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["approver", "-at"], name="approvals_approverevent_at")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"
