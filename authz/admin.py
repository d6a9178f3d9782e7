from __future__ import annotations

from django.contrib import admin
from django.db import models
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from .models import CibaClient

Application = get_application_model()


class CibaClientInline(admin.StackedInline):
    model = CibaClient
    can_delete = False
    fields = (
        "ciba_enabled",
        "token_endpoint_auth_method",
        "backchannel_token_delivery_mode",
        "backchannel_client_notification_endpoint",
        "backchannel_user_code_parameter",
        "refresh_tokens",
        "allowed_scopes",
        "created_at",
    )
    readonly_fields = ("created_at",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


BaseApplicationAdmin = oauth2_settings.APPLICATION_ADMIN_CLASS

if admin.site.is_registered(Application):
    admin.site.unregister(Application)


@admin.register(Application)
class ApplicationAdmin(BaseApplicationAdmin):
    """DOT's client admin with the client's CIBA settings alongside."""

    inlines = (*getattr(BaseApplicationAdmin, "inlines", ()), CibaClientInline)
    list_display = (*BaseApplicationAdmin.list_display, "ciba_mode")

    @admin.display(description="CIBA delivery")
    def ciba_mode(self, obj) -> str:
        ciba = getattr(obj, "ciba", None)
        return ciba.backchannel_token_delivery_mode if ciba and ciba.ciba_enabled else "—"
