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

        configured = approvals_settings.channel_names()
        unknown = [name for name in self.prompt_channel_names if name not in configured]
        if unknown:
            raise ValidationError(
                {"prompt_channels": _("Not configured on this server: %(names)s.") % {"names": ", ".join(unknown)}}
            )

    @property
    def prompt_channel_names(self) -> list[str]:
        return [name.strip() for name in self.prompt_channels.split(",") if name.strip()]

    def allows_scopes(self, scopes: list[str]) -> bool:
        if not self.allowed_scopes.strip():
            return True
        return set(scopes) <= set(self.allowed_scopes.split())
