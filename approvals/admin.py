from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from approvals import services
from approvals.models import (
    ApprovalRequest,
    Approver,
    AuditEvent,
    Delivery,
    PushSubscription,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record kept by the system: admins look, nobody edits or deletes it here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PushSubscriptionInline(ReadOnlyInline):
    model = PushSubscription
    fields = ("service_host", "user_agent", "created_at", "last_success_at", "disabled_at", "disabled_reason")
    readonly_fields = fields
    can_delete = True  # removing a device is how an admin stops prompts to a lost phone


@admin.register(Approver)
class ApproverAdmin(admin.ModelAdmin):
    list_display = ("user", "phone_number", "sms_enabled", "devices", "accepting_requests", "has_user_code")
    list_filter = ("accepting_requests",)
    search_fields = ("user__username", "user__email", "phone_number")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "has_user_code", "phone_disabled_at", "phone_disabled_reason")
    inlines = (PushSubscriptionInline,)

    @admin.display(boolean=True, description=_("user code set"))
    def has_user_code(self, obj: Approver) -> bool:
        return obj.has_user_code

    @admin.display(boolean=True, description=_("SMS"))
    def sms_enabled(self, obj: Approver) -> bool:
        return bool(obj.phone_number) and obj.phone_disabled_at is None

    @admin.display(description=_("push devices"))
    def devices(self, obj: Approver) -> int:
        return obj.push_subscriptions.filter(disabled_at__isnull=True).count()

    def save_model(self, request: HttpRequest, obj: Approver, form: object, change: bool) -> None:
        phone_number = obj.phone_number
        if change and "phone_number" in getattr(form, "changed_data", ()):
            # Saved through the service, which re-enables SMS for a new number.
            obj.phone_number = Approver.objects.values_list("phone_number", flat=True).get(pk=obj.pk)
            super().save_model(request, obj, form, change)
            services.approver_set_phone(approver=obj, phone_number=phone_number)
            return
        super().save_model(request, obj, form, change)


@admin.register(PushSubscription)
class PushSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("approver", "service_host", "created_at", "last_success_at", "disabled_at")
    list_filter = (("disabled_at", admin.EmptyFieldListFilter),)
    list_select_related = ("approver__user",)
    search_fields = ("approver__user__username", "endpoint")
    readonly_fields = (
        "approver",
        "endpoint",
        "p256dh",
        "auth",
        "user_agent",
        "created_at",
        "last_success_at",
        "disabled_at",
        "disabled_reason",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = ("created_at", "channel", "destination", "attempt", "status", "provider_status", "latency", "error")
    readonly_fields = fields

    @admin.display(description=_("latency"))
    def latency(self, obj: Delivery) -> str:
        return f"{obj.latency_ms} ms" if obj.latency_ms is not None else "-"


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """Every attempt to prompt a person, with the provider's answer."""

    list_display = ("created_at", "request", "channel", "destination", "attempt", "status", "provider_status")
    list_filter = ("channel", "status")
    list_select_related = ("request",)
    search_fields = ("request__id", "destination", "provider_id")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Delivery._meta.fields]


class EffectiveStatusFilter(admin.SimpleListFilter):
    """Status as the agent sees it: undecided requests past their expiry count as expired."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, StrOrPromise]]:
        return list(ApprovalRequest.Status.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        value = self.value()
        if not value:
            return queryset
        now = timezone.now()
        live = (ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED, ApprovalRequest.Status.DENIED)
        if value == ApprovalRequest.Status.EXPIRED:
            return queryset.filter(status=value) | queryset.filter(status__in=live, expires_at__lte=now)
        if value in live:
            return queryset.filter(status=value, expires_at__gt=now)
        return queryset.filter(status=value)


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "actor", "detail")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Read-only: decisions belong to the approver. Admins can only cancel a pending request (an action, which
    needs only the view permission)."""

    list_display = ("id", "client", "user", "current_status", "binding_message", "created_at", "expires_at")
    list_filter = (EffectiveStatusFilter, "client", "hint_type")
    list_select_related = ("client", "user")
    search_fields = ("id", "user__username", "client__name", "client__client_id", "binding_message")
    date_hierarchy = "created_at"
    # Other apps' admins add their own inlines after these.
    inlines: ClassVar[tuple[type[admin.options.InlineModelAdmin], ...]] = (AuditEventInline, DeliveryInline)
    actions = ("cancel_requests", "expire_due_requests")
    readonly_fields = (
        "id",
        "client",
        "user",
        "scope",
        "binding_message",
        "acr_values",
        "hint_type",
        "requested_expiry",
        "status",
        "current_status",
        "interval",
        "created_at",
        "expires_at",
        "prompted_at",
        "prompt_failed_at",
        "decided_at",
        "consumed_at",
        "auth_time",
        "acr",
        "access_token",
        "authorization_details_json",
    )
    # Secrets of the agent's: the id it redeems and the bearer token it wants on callbacks.
    exclude = ("auth_req_id",)

    @admin.display(description=_("status now"))
    def current_status(self, obj: ApprovalRequest) -> StrOrPromise:
        return ApprovalRequest.Status(obj.effective_status()).label

    @admin.display(description=_("authorization details"))
    def authorization_details_json(self, obj: ApprovalRequest) -> str:
        # RFC 9396: exactly what the agent asked for and the person saw; read-only like the rest of the request.
        if not obj.authorization_details:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(obj.authorization_details, indent=2, ensure_ascii=False))

    @admin.action(description=_("Cancel selected pending requests"), permissions=["view"])
    def cancel_requests(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        cancelled = sum(
            # The admin site lets only signed-in staff this far.
            services.approval_request_cancel(approval_request_id=pk, actor=cast(User, request.user))
            for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, _("%(n)d request(s) cancelled.") % {"n": cancelled}, messages.SUCCESS)

    @admin.action(description=_("Mark every overdue request expired"), permissions=["view"])
    def expire_due_requests(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        expired = services.approval_request_expire_due()
        self.message_user(request, _("%(n)d request(s) expired.") % {"n": expired}, messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "request", "actor")
    list_filter = ("kind",)
    list_select_related = ("request", "actor")
    raw_id_fields = ("request", "actor")
    date_hierarchy = "at"
