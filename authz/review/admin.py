"""The review's admin pieces of H2 (issue 18): the audit export on the audit event list, and the review API's tokens.

Imported by authz.admin (Django's autodiscovery imports only <app>.admin)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from approvals.admin import AuditEventAdmin, ReadOnlyAdmin
from approvals.display import admin_datetime
from approvals.models import AuditEvent
from authz.models import ReviewToken
from authz.review.export import AuditExportForm, export_response
from authz.review.tokens import review_tokens_revoke

# approvals' audit event list, with a link to the export: the export needs authz's review code, approvals may not
# name it, so authz registers the list again with the link (as it does for the request's page).
admin.site.unregister(AuditEvent)


@admin.register(AuditEvent)
class AuditEventWithExportAdmin(AuditEventAdmin):
    change_list_template = "admin/review/auditevent_change_list.html"

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """GET without parameters: the form; with them: the file, streamed. A read, so GET, like the list."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.GET:
            form = AuditExportForm(request.GET)
            if form.is_valid():
                return export_response(
                    start=form.cleaned_data["start"],
                    end=form.cleaned_data["end"],
                    format=form.cleaned_data["format"],
                    user=request.user,
                )
        else:
            today = timezone.localdate()
            form = AuditExportForm(initial={"start": today - timedelta(days=30), "end": today, "format": "csv"})
        context = {
            **self.admin_site.each_context(request),
            "title": "Export audit events",
            "opts": self.opts,
            "form": form,
            "zone": timezone.get_current_timezone_name(),
        }
        return TemplateResponse(request, "admin/review/audit_export.html", context)


@admin.register(ReviewToken)
class ReviewTokenAdmin(ReadOnlyAdmin):
    """The review API's tokens: minted by `manage.py create_review_token` (the value is shown once, there), listed
    and revoked here. Only superusers: a token reads the whole audit trail."""

    list_display = ("name", "user", "created", "expires", "last_used", "revoked")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("name", "user__username")
    fields = ("name", "user", "created", "expires", "last_used", "revoked")
    readonly_fields = fields
    actions = ("revoke_tokens",)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ReviewToken) -> str:
        return admin_datetime(obj.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: ReviewToken) -> str:
        return admin_datetime(obj.expires_at) if obj.expires_at else "never"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ReviewToken) -> str:
        return admin_datetime(obj.last_used_at)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, obj: ReviewToken) -> str:
        return admin_datetime(obj.revoked_at)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ReviewToken]) -> None:
        revoked = review_tokens_revoke(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Revoked {revoked} token(s); they no longer open the review API.", messages.SUCCESS)
