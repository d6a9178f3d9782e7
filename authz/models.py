from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings


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
        help_text=_("Set only after checking that the client's operator controls the website; approvers see it then."),
    )
    # RFC 7591 §2: the client's public keys, inline or by URL (fetched through approvals.http, never both).
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
    prompt_channels = models.CharField(
        _("prompt channels"),
        max_length=200,
        blank=True,
        help_text=_(
            "Channel names in the order to try them, comma-separated (e.g. webpush,sms), chosen from the "
            "server's configured channels; empty means the server's order."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("CIBA client settings")
        verbose_name_plural = _("CIBA client settings")

    def __str__(self) -> str:
        return f"CIBA settings for {self.application}"

    def clean(self) -> None:
        from approvals import http
        from approvals.conf import approvals_settings

        endpoint = self.backchannel_client_notification_endpoint
        if self.backchannel_token_delivery_mode != self.DeliveryMode.POLL:
            if not endpoint:
                raise ValidationError(
                    {"backchannel_client_notification_endpoint": _("Ping and push clients need one.")}
                )
            try:
                http.check_url(endpoint)
            except http.OutboundError as exc:
                raise ValidationError({"backchannel_client_notification_endpoint": str(exc)}) from exc

        self._clean_keys()
        self._clean_fapi()

        configured = approvals_settings.channel_names()
        unknown = [name for name in self.prompt_channel_names if name not in configured]
        if unknown:
            raise ValidationError(
                {"prompt_channels": _("Not configured on this server: %(names)s.") % {"names": ", ".join(unknown)}}
            )

    def _clean_keys(self) -> None:
        from approvals import http

        from .jose import JwksError, parse_jwks

        if self.jwks and self.jwks_uri:
            raise ValidationError({"jwks_uri": _("Register keys inline (jwks) or by URL (jwks_uri), not both.")})
        if self.jwks:
            try:
                parse_jwks(self.jwks)
            except JwksError as exc:
                raise ValidationError({"jwks": str(exc)}) from exc
        if self.jwks_uri:
            try:
                http.check_url(self.jwks_uri)
            except http.OutboundError as exc:
                raise ValidationError({"jwks_uri": str(exc)}) from exc
        needs_keys = (
            self.token_endpoint_auth_method == self.AuthMethod.PRIVATE_KEY_JWT
            or self.backchannel_authentication_request_signing_alg
        )
        if needs_keys and not (self.jwks or self.jwks_uri):
            raise ValidationError(
                {"jwks": _("private_key_jwt and signed requests need the client's public keys (jwks or jwks_uri).")}
            )

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
        oauth2_settings.ACCESS_TOKEN_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="countersign"
    )
    authorization_details = models.JSONField(default=list, blank=True)
    audience = models.JSONField(default=list, blank=True)
    act = models.JSONField(null=True, blank=True)
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
