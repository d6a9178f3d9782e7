from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings

from approvals import outbound
from approvals.conf import approvals_settings
from authz.clients.keys import JwksError, parse_jwks
from authz.constants import (
    CIBA_GRANT_TYPE,
    CLIENT_CREDENTIALS_GRANT_TYPE,
    REFRESH_TOKEN_GRANT_TYPE,
    TOKEN_EXCHANGE_GRANT_TYPE,
)
from authz.tokens.resources import resource_indicator_error


class CibaClient(models.Model):
    """CIBA client metadata (CIBA Core §4), one-to-one with DOT's Application rather than a swapped model."""

    class DeliveryMode(models.TextChoices):
        POLL = "poll", "poll"
        PING = "ping", "ping"
        PUSH = "push", "push"

    class AuthMethod(models.TextChoices):
        CLIENT_SECRET_BASIC = "client_secret_basic", "client_secret_basic"
        CLIENT_SECRET_POST = "client_secret_post", "client_secret_post"
        # RFC 7523 §2.2: a JWT signed with one of the client's registered keys (jwks or jwks_uri).
        PRIVATE_KEY_JWT = "private_key_jwt", "private_key_jwt"

    class SigningAlg(models.TextChoices):
        RS256 = "RS256", "RS256"
        PS256 = "PS256", "PS256"
        ES256 = "ES256", "ES256"
        EDDSA = "EdDSA", "EdDSA"

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="ciba", primary_key=True
    )
    ciba_enabled = models.BooleanField(
        _("may use CIBA"), default=True, help_text=_("Allows the grant urn:openid:params:grant-type:ciba.")
    )
    token_endpoint_auth_method = models.CharField(
        max_length=32, choices=AuthMethod.choices, default=AuthMethod.CLIENT_SECRET_BASIC
    )
    backchannel_token_delivery_mode = models.CharField(
        max_length=8, choices=DeliveryMode.choices, default=DeliveryMode.POLL
    )
    backchannel_client_notification_endpoint = models.URLField(blank=True, max_length=2000)
    backchannel_user_code_parameter = models.BooleanField(
        default=False, help_text=_("The client sends the user's user_code with each request.")
    )
    refresh_tokens = models.BooleanField(_("issue refresh tokens"), default=True)
    allowed_scopes = models.CharField(
        max_length=500, blank=True, help_text=_("Space-separated scopes this client may ask for; empty means any.")
    )
    website = models.URLField(_("website"), blank=True, help_text=_("The agent's home page, shown to approvers."))
    website_verified = models.BooleanField(
        _("website verified"),
        default=False,
        help_text=_(
            "Set only after checking that the client's operator controls the website and goes by this name; approvers "
            "see it then. A registration update that changes the name or the website clears it."
        ),
    )
    # RFC 7591 §2: the client's public keys, inline or by URL (fetched through approvals.outbound, never both).
    jwks = models.JSONField(_("JWKS"), null=True, blank=True, help_text=_("The client's public keys, a JWK Set."))
    jwks_uri = models.URLField(_("JWKS URI"), blank=True, max_length=2000)
    token_endpoint_auth_signing_alg = models.CharField(
        max_length=8,
        choices=SigningAlg.choices,
        blank=True,
        help_text=_("The only algorithm accepted for private_key_jwt assertions; empty means any supported one."),
    )
    # CIBA Core §4: set means every authentication request must be a signed `request` object with this algorithm.
    backchannel_authentication_request_signing_alg = models.CharField(
        max_length=8, choices=SigningAlg.choices, blank=True
    )
    fapi_ciba = models.BooleanField(
        _("FAPI-CIBA profile"),
        default=False,
        help_text=_(
            "Enforce FAPI-CIBA: signed requests with PS256 or ES256, private_key_jwt, a binding message on every "
            "request, and no push mode."
        ),
    )
    # RFC 9396 §10: the authorization_details types this client may use; empty means every enabled type.
    authorization_details_types = models.JSONField(default=list, blank=True)
    client_credentials_enabled = models.BooleanField(
        _("may act on its own behalf"),
        default=False,
        help_text=_("Allows the client_credentials grant: tokens for the agent itself, with no person's approval."),
    )
    token_exchange_enabled = models.BooleanField(
        _("may exchange tokens"),
        default=True,
        help_text=_("Allows RFC 8693 token exchange of this client's tokens for narrower downstream tokens."),
    )
    # RFC 7662 section 4: who besides the token's own client may introspect it
    # (authz.tokens.introspection.may_introspect).
    resource_server = models.BooleanField(
        _("resource server"),
        default=False,
        help_text=_(
            "A protected resource that introspects other clients' tokens: those bound to one of its resources or to "
            "its client_id, and those bound to nothing. Set by create_agent_client --no-ciba, never by registration."
        ),
    )
    resources = models.JSONField(
        _("resources"),
        default=list,
        blank=True,
        help_text=_("The resource URIs (RFC 8707) this resource server serves, e.g. https://api.example/."),
    )
    prompt_channels = models.CharField(
        _("prompt channels"),
        max_length=200,
        blank=True,
        help_text=_(
            "Channel names in the order to try them, comma-separated (e.g. webpush,sms), chosen from the "
            "server's configured channels; empty means the server's order."
        ),
    )
    # What a client's own registration updates (RFC 7592) may not exceed: these fields as an administrator last saved
    # them (authz.clients.registration.apply_registration_policy). Null until an administrator saves the client.
    admin_limits = models.JSONField(null=True, blank=True, editable=False)
    admin_limits_at = models.DateTimeField(
        _("limits for registration updates set"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "When an administrator last saved this client. Its registration updates may since narrow what it may do "
            "(grants, scopes, authorization details types) but not widen it, nor drop private_key_jwt, signed "
            "requests or user codes required then."
        ),
    )
    # Issue 18: an administrator may suspend an agent (authz.review.actions.agent_suspend): while set, bc-authorize
    # and every grant at the token endpoint answer unauthorized_client and its tokens were revoked. Cleared on resume.
    suspended_at = models.DateTimeField(_("suspended at"), null=True, blank=True, editable=False)
    suspended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("suspended by"),
    )
    suspension_reason = models.CharField(_("suspension reason"), max_length=255, blank=True, editable=False)
    # RFC 7592 §2.3: when the agent deleted its registration (authz.review.actions.agent_deregister). The row stays, so
    # that its requests' audit trail does (issue 18: the trail is append-only), but the client is gone: every
    # authentication with its client_id fails as for an unknown client, and it stays suspended for good.
    deregistered_at = models.DateTimeField(_("registration deleted at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # The fields whose values at an administrator's last save bound what the client may give itself.
    ADMIN_LIMITED_FIELDS = (
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

    class Meta:
        verbose_name = _("CIBA client settings")
        verbose_name_plural = _("CIBA client settings")
        permissions = [("suspend_cibaclient", "Can suspend and resume agents")]

    def __str__(self) -> str:
        return f"CIBA settings for {self.application}"

    # Written only by authz.review.actions (agent_suspend, agent_resume, agent_deregister), with conditional UPDATEs.
    SUSPENSION_FIELDS = frozenset({"suspended_at", "suspended_by", "suspension_reason", "deregistered_at"})

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A save of an existing row leaves the suspension alone: settings read before a suspension (an agent's
        RFC 7592 update in flight, an administrator's form) must not write `suspended_at = NULL` back over it."""
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            deferred = self.get_deferred_fields()  # as Django's own save: only what was loaded
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in self.SUSPENSION_FIELDS and field.attname not in deferred
            ]
        super().save(*args, **kwargs)

    def clean(self) -> None:
        endpoint = self.backchannel_client_notification_endpoint
        if self.backchannel_token_delivery_mode != self.DeliveryMode.POLL:
            if not endpoint:
                raise ValidationError(
                    {"backchannel_client_notification_endpoint": _("Ping and push clients need one.")}
                )
            try:
                outbound.check_url(endpoint)
            except outbound.OutboundError as exc:
                raise ValidationError({"backchannel_client_notification_endpoint": str(exc)}) from exc

        self._clean_keys()
        self._clean_fapi()
        self._clean_resources()

        configured = approvals_settings.channel_names()
        unknown = [name for name in self.prompt_channel_names if name not in configured]
        if unknown:
            raise ValidationError(
                {"prompt_channels": _("Not configured on this server: %(names)s.") % {"names": ", ".join(unknown)}}
            )

    def _clean_keys(self) -> None:
        if self.jwks and self.jwks_uri:
            raise ValidationError({"jwks_uri": _("Register keys inline (jwks) or by URL (jwks_uri), not both.")})
        if self.jwks:
            try:
                parse_jwks(self.jwks)
            except JwksError as exc:
                raise ValidationError({"jwks": str(exc)}) from exc
        if self.jwks_uri:
            try:
                outbound.check_url(self.jwks_uri)
            except outbound.OutboundError as exc:
                raise ValidationError({"jwks_uri": str(exc)}) from exc
        needs_keys = (
            self.token_endpoint_auth_method == self.AuthMethod.PRIVATE_KEY_JWT
            or self.backchannel_authentication_request_signing_alg
        )
        if needs_keys and not (self.jwks or self.jwks_uri):
            raise ValidationError(
                {"jwks": _("private_key_jwt and signed requests need the client's public keys (jwks or jwks_uri).")}
            )

    def _clean_resources(self) -> None:
        if not isinstance(self.resources, list) or not all(isinstance(r, str) for r in self.resources):
            raise ValidationError({"resources": _("A JSON list of resource URIs.")})
        problems = [problem for problem in map(resource_indicator_error, self.resources) if problem]
        if problems:
            raise ValidationError({"resources": problems[0]})

    def _clean_fapi(self) -> None:
        """FAPI-CIBA Security Profile §5.2.2: what an OP must enforce for clients of the profile."""
        if not self.fapi_ciba:
            return
        errors = {}
        if self.backchannel_authentication_request_signing_alg not in (self.SigningAlg.PS256, self.SigningAlg.ES256):
            errors["backchannel_authentication_request_signing_alg"] = _(
                "FAPI-CIBA clients sign requests with PS256 or ES256."
            )
        if self.token_endpoint_auth_method != self.AuthMethod.PRIVATE_KEY_JWT:
            errors["token_endpoint_auth_method"] = _("FAPI-CIBA clients authenticate with private_key_jwt.")
        elif self.token_endpoint_auth_signing_alg not in ("", self.SigningAlg.PS256, self.SigningAlg.ES256):
            errors["token_endpoint_auth_signing_alg"] = _("FAPI-CIBA allows PS256 and ES256 only.")
        if self.backchannel_token_delivery_mode == self.DeliveryMode.PUSH:
            errors["backchannel_token_delivery_mode"] = _("FAPI-CIBA does not allow push mode.")
        if errors:
            raise ValidationError(errors)

    def admin_limits_record(self, *, now: Any) -> None:
        """An administrator has saved this client: what it may do now bounds its own registration updates."""
        limits = {name: getattr(self, name) for name in self.ADMIN_LIMITED_FIELDS}
        CibaClient.objects.filter(pk=self.pk).update(admin_limits=limits, admin_limits_at=now)
        self.admin_limits, self.admin_limits_at = limits, now

    @property
    def allowed_signing_algs(self) -> list[str]:
        """The algorithms private_key_jwt assertions may use for this client."""
        allowed = (
            [self.token_endpoint_auth_signing_alg] if self.token_endpoint_auth_signing_alg else self.SigningAlg.values
        )
        if self.fapi_ciba:
            # FAPI 1.0 Advanced §8.6, also for a row written around clean() (an RS256 registration is refused there).
            allowed = [alg for alg in allowed if alg in (self.SigningAlg.PS256, self.SigningAlg.ES256)]
        return list(allowed)

    @property
    def prompt_channel_names(self) -> list[str]:
        return [name.strip() for name in self.prompt_channels.split(",") if name.strip()]

    def allows_scopes(self, scopes: list[str]) -> bool:
        if not self.allowed_scopes.strip():
            return True
        return set(scopes) <= set(self.allowed_scopes.split())

    def allows_grant(self, grant_type: str) -> bool:
        """Whether this client may use `grant_type` now: the one client-capability policy (see client_allows_grant).

        Refresh tokens come only from a person's CIBA approval, so refreshing needs CIBA as well as refresh tokens:
        an administrator who turns either off stops every refresh token the client holds. A suspended client
        (issue 18) may use none, and no token it holds stands."""
        if self.suspended_at is not None:
            return False
        if grant_type == CIBA_GRANT_TYPE:
            return self.ciba_enabled
        if grant_type == REFRESH_TOKEN_GRANT_TYPE:
            return self.ciba_enabled and self.refresh_tokens
        if grant_type == CLIENT_CREDENTIALS_GRANT_TYPE:
            return self.client_credentials_enabled
        if grant_type == TOKEN_EXCHANGE_GRANT_TYPE:
            return self.token_exchange_enabled
        return False  # authorization_code, password, device_code: never for an agent


def ciba_client_of(application: Any) -> CibaClient | None:
    """The application's CibaClient row, or None for no application or one without CIBA metadata (not an agent)."""
    if application is None:
        return None
    try:
        ciba: CibaClient = application.ciba
    except CibaClient.DoesNotExist:
        return None
    return ciba


# What a suspended agent is told (unauthorized_client) at bc-authorize and the token endpoint.
SUSPENDED_DESCRIPTION = "This client is suspended; its operator should contact the server's administrator."


def client_suspended(application: Any) -> bool:
    """Whether an administrator has suspended this agent (authz.review.actions.agent_suspend), or it deleted its
    registration (agent_deregister), which suspends it for good."""
    ciba = ciba_client_of(application)
    return ciba is not None and ciba.suspended_at is not None


def client_deregistered(application: Any) -> bool:
    """Whether this agent deleted its registration (RFC 7592 §2.3): its client_id no longer authenticates."""
    ciba = ciba_client_of(application)
    return ciba is not None and ciba.deregistered_at is not None


def client_allows_grant(application: Any, grant_type: str) -> bool:
    """The client-capability policy every grant asks: bc-authorize and the CIBA grant, refresh, client credentials and
    token exchange (authz.views, CountersignValidator.validate_grant_type, authz.tokens.exchange), and token_active
    for the tokens a client already holds. An agent's CibaClient decides; an application without one (an OAuth client
    an administrator added in DOT's admin) keeps DOT's rules for DOT's grants and gets none of Countersign's."""
    if application is None:
        return False
    ciba = ciba_client_of(application)
    if ciba is not None:
        return ciba.allows_grant(grant_type)
    from oauth2_provider.oauth2_validators import GRANT_TYPE_MAPPING  # needs the app registry: imported on use

    allowed = GRANT_TYPE_MAPPING.get(grant_type)
    return bool(allowed) and application.allows_grant_type(*allowed)


class AuthorizationDetailType(models.Model):
    """An RFC 9396 authorization_details type agents may ask approval for: its JSON Schema and how the approval page
    shows it to the person."""

    type = models.CharField(
        _("type"), max_length=255, unique=True, help_text=_("The `type` value agents send, e.g. payment_initiation.")
    )
    name = models.CharField(_("name"), max_length=100, help_text=_("Shown to approvers as the heading."))
    description = models.TextField(_("description"), blank=True)
    schema = models.JSONField(_("JSON Schema"), default=dict, help_text=_("Validates each object of this type."))
    display_template = models.TextField(
        _("display template"),
        blank=True,
        help_text=_("Django template for the approval page; the object is `detail`. Empty shows every field as a row."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("authorization details type")
        ordering = ["type"]

    def __str__(self) -> str:
        return self.type


class TokenDetails(models.Model):
    """What an access token carries beyond DOT's scope: the approved authorization_details (RFC 9396 §7), the
    audience it was exchanged for and who acts for whom (RFC 8693 §4.1), and the token it came from."""

    access_token = models.OneToOneField(
        oauth2_settings.ACCESS_TOKEN_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="token_details"
    )
    authorization_details = models.JSONField(default=list, blank=True)
    audience = models.JSONField(default=list, blank=True)
    act = models.JSONField(null=True, blank=True)
    # When the person approved the grant this token descends from: refreshed tokens carry it on, and the refresh
    # token's lifetime is counted from it (CountersignValidator.validate_refresh_token), so refreshing never slides it.
    granted_at = models.DateTimeField(null=True, blank=True)
    subject_token = models.ForeignKey(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="exchanged_tokens",
        help_text=_("The token this one was exchanged from (RFC 8693)."),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("token details")
        verbose_name_plural = _("token details")

    def __str__(self) -> str:
        return f"Details of token {self.access_token_id}"


class Notification(models.Model):
    """The client's callback for a ping or push client (CIBA Core §10.2, §10.3): one per request, written in the
    transaction that ends the request's pending state, delivered by a Celery task, retried until its deadline."""

    class Mode(models.TextChoices):
        PING = "ping", "ping"
        PUSH = "push", "push"

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        # Refused for good (4xx, a redirect, an address not allowed) or retried past its deadline: kept for admins.
        UNDELIVERABLE = "undeliverable", _("Undeliverable")

    request = models.OneToOneField("approvals.ApprovalRequest", on_delete=models.CASCADE, related_name="notification")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    # The outcome it reports: approved, denied, expired or cancelled.
    outcome = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Push: the token response, issued once and encrypted at rest (authz.ciba.notify), resent as is on retries.
    payload_encrypted = models.TextField(blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField()
    due_at = models.DateTimeField(editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = _("client notification")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["due_at"], name="authz_notify_due_idx", condition=models.Q(status="pending"))]

    def __str__(self) -> str:
        return f"{self.mode} {self.outcome} for {self.request_id}: {self.status}"


class NotificationAttempt(models.Model):
    """One POST to the client's notification endpoint: written before the call and again after it."""

    class Status(models.TextChoices):
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered (2xx)")
        FAILED = "failed", _("Failed (retried)")
        REJECTED = "rejected", _("Rejected (not retried)")

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    attempt = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SENDING)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("notification attempt")
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"attempt {self.attempt}: {self.status}"


class RequestCallback(models.Model):
    """How and where a ping or push client is called back about one request (CIBA Core 10.2, 10.3), as its
    registration said when it asked, with the client_notification_token it sent (CIBA Core 7.1). Bound to the
    request, so that a registration update meanwhile cannot redirect the callback, a push of tokens least of all.
    A poll request has none."""

    Mode = Notification.Mode

    request = models.OneToOneField(
        "approvals.ApprovalRequest", on_delete=models.CASCADE, primary_key=True, related_name="callback"
    )
    mode = models.CharField(max_length=8, choices=Mode.choices, editable=False)
    endpoint = models.URLField(max_length=2000, editable=False)
    # The bearer token our callback carries (CIBA Core 10.2): the client's, sent back to it, so kept as given.
    token = models.CharField(_("client notification token"), max_length=1024, editable=False)

    class Meta:
        verbose_name = _("request callback")

    def __str__(self) -> str:
        return f"{self.mode} to {self.endpoint}"


class AgentEvent(models.Model):
    """What happened to an agent as a whole (issue 18): an administrator suspended or resumed it, or it deleted its
    own registration. Append-only: written by authz.review.actions, never changed or deleted in admin. What that did
    to each request (cancelled, tokens revoked) is an approvals AuditEvent on that request."""

    class Kind(models.TextChoices):
        SUSPENDED = "suspended", _("Suspended")
        RESUMED = "resumed", _("Resumed")
        # The agent itself, through RFC 7592 DELETE: no actor.
        DEREGISTERED = "deregistered", _("Deleted its registration")

    client = models.ForeignKey(CibaClient, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("agent event")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["client", "-at"], name="authz_agentevent_client_at")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M:%S}"


class ReviewToken(models.Model):
    """A bearer token for the read-only review API (authz.review.api), for security tooling that pulls the audit
    trail. Stored as its SHA-256 only: the value is printed once by `create_review_token` and a copy of the database
    holds nothing usable. A token acts as its staff user: it opens the API only while that user is active, staff and
    holds the viewer role's permissions (or is a superuser), so taking a person's role away closes their tokens too."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_tokens")
    name = models.CharField(_("name"), max_length=100, blank=True, help_text=_("What the token is for."))
    # sha256(token) in hex; tokens are 256 random bits, so a fast hash is enough (as for client secrets).
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True, editable=False)
    # Written at most once a minute (authz.review.tokens), not on every call.
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("review API token")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name or 'token'} of {self.user}"
