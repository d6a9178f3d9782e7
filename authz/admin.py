from __future__ import annotations

import json
from typing import Any, TypeAlias

from django import forms
from django.contrib import admin
from django.db import models
from django.utils import timezone
from django.utils.html import format_html
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.settings import oauth2_settings

from approvals.admin import ApprovalRequestAdmin, ReadOnlyAdmin, ReadOnlyInline
from approvals.models import ApprovalRequest
from authz.models import (
    AuthorizationDetailType,
    CibaClient,
    Notification,
    NotificationAttempt,
    RequestCallback,
    TokenDetails,
)
from authz.tokens import details

Application = get_application_model()
AccessToken = get_access_token_model()


class CibaClientForm(forms.ModelForm):
    class Meta:
        model = CibaClient
        fields = ("authorization_details_types",)  # the inline's own `fields` add the rest

    def clean_authorization_details_types(self) -> list[str]:
        # RFC 9396 §10: the types this client may ask for, by name; empty means every enabled type.
        value = self.cleaned_data.get("authorization_details_types") or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise forms.ValidationError('A JSON list of type names, e.g. ["payment_initiation"].')
        known = set(AuthorizationDetailType.objects.filter(type__in=value).values_list("type", flat=True))
        unknown = [item for item in value if item not in known]
        if unknown:
            raise forms.ValidationError("Unknown authorization details types: %(names)s", params={"names": unknown})
        return value


class CibaClientInline(admin.StackedInline):
    model = CibaClient
    form = CibaClientForm
    can_delete = False
    # CibaClient.clean() checks keys, URLs (SSRF rules) and the FAPI-CIBA profile, for this form as for DCR.
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "ciba_enabled",
                    "backchannel_token_delivery_mode",
                    "backchannel_client_notification_endpoint",
                    "backchannel_user_code_parameter",
                    "refresh_tokens",
                    "allowed_scopes",
                    "prompt_channels",
                    "website",
                    "website_verified",
                    "admin_limits_at",
                    "created_at",
                )
            },
        ),
        (
            "Identity (RFC 7523, CIBA Core §7.1.1, FAPI-CIBA)",
            {
                "fields": (
                    "token_endpoint_auth_method",
                    "token_endpoint_auth_signing_alg",
                    "jwks",
                    "jwks_uri",
                    "backchannel_authentication_request_signing_alg",
                    "fapi_ciba",
                )
            },
        ),
        (
            "Transactions and delegation (RFC 9396, RFC 8693)",
            {"fields": ("authorization_details_types", "client_credentials_enabled", "token_exchange_enabled")},
        ),
        ("Resource server (RFC 7662 introspection)", {"fields": ("resource_server", "resources")}),
    )
    readonly_fields = ("admin_limits_at", "created_at")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


# DOT's client admin, chosen in its settings at run time.
BaseApplicationAdmin: TypeAlias = oauth2_settings.APPLICATION_ADMIN_CLASS

if admin.site.is_registered(Application):
    admin.site.unregister(Application)


@admin.register(Application)
class ApplicationAdmin(BaseApplicationAdmin):
    """DOT's client admin with the client's CIBA settings alongside."""

    inlines = (*getattr(BaseApplicationAdmin, "inlines", ()), CibaClientInline)
    list_display = (*BaseApplicationAdmin.list_display, "ciba_mode")

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # What an administrator saves bounds the client's own registration updates
        # (RFC 7592, authz.clients.registration).
        ciba = CibaClient.objects.filter(application=form.instance).first()
        if ciba is not None:
            ciba.admin_limits_record(now=timezone.now())

    @admin.display(description="CIBA delivery")
    def ciba_mode(self, obj: Any) -> str:
        ciba = getattr(obj, "ciba", None)
        return ciba.backchannel_token_delivery_mode if ciba and ciba.ciba_enabled else "—"


class AuthorizationDetailTypeForm(forms.ModelForm):
    class Meta:
        model = AuthorizationDetailType
        fields = ("type", "name", "description", "schema", "display_template", "enabled")
        help_texts = {
            "display_template": (
                "A Django template shown to the approver instead of the generic field list, rendered by a "
                "restricted engine: autoescaped, no {% load %}, the tags if, for, with, comment and firstof and the "
                "filters default, default_if_none, join, length, first, last, yesno, pluralize and iso_datetime "
                "only. Its context is `detail` (the object the agent sent; each value is shown boxed as data, so "
                "do not put quotation marks around it) and `type` (this type's type and name). Show every field "
                "the schema allows: the person approves what they read."
            ),
        }

    def clean_type(self) -> str:
        value: str = self.cleaned_data["type"]
        for message in details.type_name_errors(value):
            raise forms.ValidationError(message)
        return value

    def clean_schema(self) -> Any:
        value = self.cleaned_data.get("schema")
        errors = details.schema_errors(value, type_name=self.cleaned_data.get("type") or "")
        if errors:
            raise forms.ValidationError(errors)
        return value

    def clean_display_template(self) -> str:
        value = self.cleaned_data.get("display_template") or ""
        errors = details.template_errors(value)
        if errors:
            raise forms.ValidationError(errors)
        return value


@admin.register(AuthorizationDetailType)
class AuthorizationDetailTypeAdmin(admin.ModelAdmin):
    """RFC 9396 types agents may send: checked on save (a valid JSON Schema, a compiling display template)."""

    form = AuthorizationDetailTypeForm
    list_display = ("type", "name", "enabled", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("type", "name", "description")
    readonly_fields = ("created_at", "updated_at")
    fields = ("type", "name", "description", "schema", "display_template", "enabled", "created_at", "updated_at")


class TokenDetailsInline(admin.StackedInline):
    """What a token was approved for and whose authority it carries; written only by issuance and exchange."""

    model = TokenDetails
    fk_name = "access_token"
    can_delete = False
    fields = ("authorization_details_json", "audience", "act_json", "subject_token", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="authorization details (RFC 9396)")
    def authorization_details_json(self, obj: TokenDetails) -> str:
        return _pretty(obj.authorization_details)

    @admin.display(description="act (RFC 8693)")
    def act_json(self, obj: TokenDetails) -> str:
        return _pretty(obj.act)


def _pretty(value: Any) -> str:
    if not value:
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


# DOT's token admin, chosen in its settings at run time.
BaseAccessTokenAdmin: TypeAlias = oauth2_settings.ACCESS_TOKEN_ADMIN_CLASS

if admin.site.is_registered(AccessToken):
    admin.site.unregister(AccessToken)


@admin.register(AccessToken)
class AccessTokenAdmin(BaseAccessTokenAdmin):
    """DOT's token admin with the approved authorization_details and the exchange chain alongside."""

    inlines = (*getattr(BaseAccessTokenAdmin, "inlines", ()), TokenDetailsInline)


class RequestCallbackInline(ReadOnlyInline):
    """Where the agent is called back; its client_notification_token is the agent's secret, never shown."""

    model = RequestCallback
    fields = ("mode", "endpoint")
    readonly_fields = fields


class NotificationInline(ReadOnlyInline):
    model = Notification
    fields = ("mode", "outcome", "status", "attempts", "created_at", "deadline", "finished_at", "error")
    readonly_fields = fields


class NotificationAttemptInline(ReadOnlyInline):
    model = NotificationAttempt
    fields = ("created_at", "attempt", "status", "http_status", "latency_ms", "error")
    readonly_fields = fields


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Ping and push callbacks to agents; an undeliverable one stays here (its tokens are never shown)."""

    list_display = ("created_at", "request", "mode", "outcome", "status", "attempts", "error")
    list_filter = ("status", "mode", "outcome")
    list_select_related = ("request",)
    search_fields = ("request__id",)
    date_hierarchy = "created_at"
    fields = ("request", "mode", "outcome", "status", "attempts", "created_at", "deadline", "finished_at", "error")
    readonly_fields = fields
    inlines = (NotificationAttemptInline,)


# The request's page in admin shows the callback its agent was owed: authz adds it, approvals knows nothing of it.
admin.site.unregister(ApprovalRequest)


@admin.register(ApprovalRequest)
class ApprovalRequestWithNotificationAdmin(ApprovalRequestAdmin):
    inlines = (*ApprovalRequestAdmin.inlines, RequestCallbackInline, NotificationInline)
