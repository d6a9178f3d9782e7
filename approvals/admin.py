from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Model, Q, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from redis.exceptions import RedisError

from approvals import lockouts, review, services
from approvals.display import admin_datetime
from approvals.models import (
    ApprovalRequest,
    Approver,
    ApproverEvent,
    AuditEvent,
    Delivery,
    PushSubscription,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class SafeLookupsMixin:
    """Query parameters no page of ours produces, refused rather than leaking or failing (issue 18 review):

    - Django's admin lets any query parameter filter a list on its model's own columns, declared filter or not
      (ModelAdmin.lookup_allowed): `?auth_req_id__startswith=Ab` answered differently for a right and a wrong
      prefix, an oracle that read a secret column one character at a time. Lookups on `secret_columns` are refused
      (Django answers 400), whatever the lookup; a declared filter or the search box is the way to find rows.
    - A value Python or PostgreSQL cannot hold (`?at__year=99999`, a date drill-down to 9999-12-31) fails while the
      list is read, a 500: answered as Django answers a lookup it cannot use, back to the list with `?e=1`."""

    secret_columns: ClassVar[frozenset[str]] = frozenset()

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if lookup.split(LOOKUP_SEP, 1)[0] in self.secret_columns:
            return False
        allowed: bool = super().lookup_allowed(lookup, value, request)  # type: ignore[misc]
        return allowed

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            changelist: ChangeList = super().get_changelist_instance(request)  # type: ignore[misc]
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc
        return changelist


def _is_pk(model: type[Model], value: str) -> bool:
    try:
        model._meta.pk.to_python(value)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


class ReadOnlyAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """A record kept by the system: admins look, nobody edits or deletes it here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SafeSelectionMixin:
    """Actions on selected rows without a 500 on a hostile selection: ids that are not ids of this model (a UUID field
    given "x") are dropped before Django filters by them, which would raise."""

    model: type[Model]

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        valid = [value for value in selected if _is_pk(self.model, value)]
        if len(valid) != len(selected):
            post = request.POST.copy()
            post.setlist(helpers.ACTION_CHECKBOX_NAME, valid)
            request.POST = post  # type: ignore[assignment]  # the stubs type POST as immutable; a copy replaces it
        response: HttpResponse | None = super().response_action(request, queryset)  # type: ignore[misc]
        return response


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PushSubscriptionInline(ReadOnlyInline):
    model = PushSubscription
    fields = ("service_host", "user_agent", "added", "last_success", "disabled", "disabled_reason")
    readonly_fields = fields
    can_delete = True  # removing a device is how an admin stops prompts to a lost phone

    @admin.display(description=_("added"))
    def added(self, obj: PushSubscription) -> str:
        return admin_datetime(obj.created_at)

    @admin.display(description=_("last success"))
    def last_success(self, obj: PushSubscription) -> str:
        return admin_datetime(obj.last_success_at)

    @admin.display(description=_("disabled"))
    def disabled(self, obj: PushSubscription) -> str:
        return admin_datetime(obj.disabled_at)


# How many of an approver's latest requests their page lists (issue 18 item 4).
RECENT_REQUESTS = 10


@admin.register(Approver)
class ApproverAdmin(SafeLookupsMixin, SafeSelectionMixin, admin.ModelAdmin):
    """Approvers: how they are reached (phone, push devices), their latest requests, and their lockouts, which an
    operator may clear (approvals.lockouts, recorded as an ApproverEvent)."""

    # A user code is short: its hash, read out through a lookup, would be brute-forced offline.
    secret_columns = frozenset({"user_code_hash"})

    list_display = ("user", "phone_number", "sms_enabled", "devices", "accepting_requests", "has_user_code")
    list_filter = ("accepting_requests",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "phone_number")
    raw_id_fields = ("user",)
    readonly_fields = (
        "created_at",
        "has_user_code",
        "phone_disabled_at",
        "phone_disabled_reason",
        "lockout_states",
        "lockout_history",
        "recent_requests",
    )
    inlines = (PushSubscriptionInline,)
    actions = ("clear_lockouts",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approver]:
        # The list's device count without a query per row.
        live = Count("push_subscriptions", filter=Q(push_subscriptions__disabled_at__isnull=True))
        approvers: QuerySet[Approver] = super().get_queryset(request).annotate(live_devices=live)
        return approvers

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.clear_lockouts_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_clear_lockouts"
        return [path("<path:object_id>/clear-lockouts/", view, name=name), *super().get_urls()]

    def has_clear_lockout_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.clear_lockout_approver")

    @admin.display(description=_("lockouts"))
    def lockout_states(self, obj: Approver, *, clearable: bool = False) -> str:
        if not obj.pk:
            return "-"
        try:
            current = lockouts.approver_lockouts(obj)
        except RedisError:
            return str(_("Unknown: the lockout counters cannot be read now (Redis is unreachable)."))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (lockout.label, _lockout_state(lockout), f"{lockout.failures} of {lockout.max_failures}")
                for lockout in current
            ),
        )
        table = format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("what"),
            _("state"),
            _("wrong guesses in the window"),
            rows,
        )
        if clearable and any(lockout.failures for lockout in current):
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_clear_lockouts", args=[obj.pk])
            return format_html('{}<p><a class="button" href="{}">{}</a></p>', table, url, _("Clear lockouts…"))
        return table

    @admin.display(description=_("lockouts"))
    def lockout_states_clearable(self, obj: Approver) -> str:
        """The same, with the way to clear them, for those who may (get_readonly_fields picks one)."""
        return self.lockout_states(obj, clearable=True)

    def get_readonly_fields(self, request: HttpRequest, obj: Approver | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if self.has_clear_lockout_permission(request):
            fields = tuple("lockout_states_clearable" if name == "lockout_states" else name for name in fields)
        return fields

    @admin.display(description=_("lockouts cleared"))
    def lockout_history(self, obj: Approver) -> str:
        events = list(ApproverEvent.objects.filter(approver_id=obj.pk).select_related("actor")[:10]) if obj.pk else []
        if not events:
            return "-"
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        admin_datetime(event.at),
                        event.actor.get_username() if event.actor else "-",
                        ", ".join(str(lockouts.LABELS.get(kind, kind)) for kind in event.detail.get("cleared", [])),
                    )
                    for event in events
                ),
            ),
        )

    @admin.display(description=_("recent requests"))
    def recent_requests(self, obj: Approver) -> str:
        if not obj.pk:
            return "-"
        latest = list(
            ApprovalRequest.objects.filter(user_id=obj.user_id)
            .select_related("client")
            .order_by("-created_at")[:RECENT_REQUESTS]
        )
        if not latest:
            return str(_("None yet."))
        now = timezone.now()
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:approvals_approvalrequest_change", args=[r.pk]),
                    admin_datetime(r.created_at),
                    r.client.name or r.client.client_id,
                    ApprovalRequest.Status(r.effective_status(now)).label,
                    r.binding_message or "-",
                )
                for r in latest
            ),
        )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("created"),
            _("agent"),
            _("status"),
            _("binding message"),
            rows,
        )

    def clear_lockouts_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The confirmation step and the clearing (POST) of one approver's lockouts."""
        if not self.has_clear_lockout_permission(request):
            raise PermissionDenied
        approver = self.get_object(request, unquote(object_id))
        if approver is None:
            raise Http404
        change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[approver.pk])
        if request.method == "POST":
            cleared = self._clear(request, approver)
            if cleared is not None:
                self._report(request, [cleared])
            return HttpResponseRedirect(change_url)
        try:
            current = lockouts.approver_lockouts(approver)
        except RedisError:
            self.message_user(
                request, _("The lockout counters cannot be read now (Redis is unreachable)."), messages.ERROR
            )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Clear lockouts"),
            "subtitle": None,
            "opts": self.opts,
            "approver": approver,
            "lockouts": current,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/approvals/approver/clear_lockouts.html", context)

    @admin.action(description=_("Clear the lockouts of selected approvers"), permissions=["clear_lockout"])
    def clear_lockouts(self, request: HttpRequest, queryset: QuerySet[Approver]) -> None:
        results = [self._clear(request, approver) for approver in queryset.select_related("user")]
        self._report(request, [result for result in results if result is not None])

    def _clear(self, request: HttpRequest, approver: Approver) -> tuple[Approver, list[str]] | None:
        try:
            # The admin site lets only signed-in staff this far.
            return approver, lockouts.approver_clear_lockouts(approver=approver, actor=cast(User, request.user))
        except lockouts.NotYours:
            self.message_user(
                request,
                _("Nothing cleared for %(who)s: a staff account's lockouts are a superuser's to clear.")
                % {"who": approver},
                messages.ERROR,
            )
            return None
        except RedisError:
            self.message_user(
                request, _("Nothing cleared for %(who)s: Redis is unreachable.") % {"who": approver}, messages.ERROR
            )
            return None

    def _report(self, request: HttpRequest, results: list[tuple[Approver, list[str]]]) -> None:
        cleared = [(approver, kinds) for approver, kinds in results if kinds]
        for approver, kinds in cleared:
            what = ", ".join(str(lockouts.LABELS[kind]) for kind in kinds)
            self.message_user(request, _("Cleared for %(who)s: %(what)s.") % {"who": approver, "what": what})
        if len(cleared) < len(results):
            self.message_user(
                request,
                _("%(n)d approver(s) had no wrong guesses counted; nothing to clear.")
                % {"n": len(results) - len(cleared)},
                messages.INFO,
            )

    @admin.display(boolean=True, description=_("user code set"))
    def has_user_code(self, obj: Approver) -> bool:
        return obj.has_user_code

    @admin.display(boolean=True, description=_("SMS"))
    def sms_enabled(self, obj: Approver) -> bool:
        return bool(obj.phone_number) and obj.phone_disabled_at is None

    @admin.display(description=_("push devices"), ordering="live_devices")
    def devices(self, obj: Approver) -> int:
        live = getattr(obj, "live_devices", None)
        return live if live is not None else obj.push_subscriptions.filter(disabled_at__isnull=True).count()

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
class PushSubscriptionAdmin(SafeLookupsMixin, admin.ModelAdmin):
    list_display = ("approver", "service_host", "created_at", "last_success_at", "disabled_at")
    list_filter = (("disabled_at", admin.EmptyFieldListFilter),)
    list_select_related = ("approver__user",)
    search_fields = ("approver__user__username", "endpoint")
    # The device's Web Push keys (RFC 8291: `auth` is a secret shared with the browser): never shown, nor filtered
    # on; the viewer role reads this page (issue 18).
    exclude = ("p256dh", "auth")
    secret_columns = frozenset({"p256dh", "auth"})
    readonly_fields = (
        "approver",
        "endpoint",
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

    # The trail is append-only for everyone, superusers included (issue 18): shown, never edited here.
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(SafeSelectionMixin, ReadOnlyAdmin):
    """Read-only: decisions belong to the approver. Admins can only cancel a pending request (an action, for those
    with the cancel permission)."""

    # Issue 18: one status column (as the agent sees it), who or what decided and when, to the second; built from
    # the request's row and its joined client, user and decider, so a page of 100 costs the same few queries
    # (approvals.review).
    list_display = (
        "created",
        "status_now",
        "agent",
        "approver",
        "binding_message",
        "decided",
        "time_to_decision",
        "channel",
        "tokens_issued",
    )
    list_display_links = ("created",)
    list_filter: ClassVar[tuple[Any, ...]] = (
        EffectiveStatusFilter,
        review.AgentFilter,
        review.ApproverFilter,
        review.ChannelFilter,
        "decided_via",
        review.CreatedRangeFilter,
    )
    list_select_related = ("client", "user", "decided_by")
    # The search box (review.search, changelist_view): named fields only mark it as shown.
    search_fields = ("binding_message",)
    search_help_text = _(
        "An agent's client_id or name, an approver's username or e-mail, words of the binding message, a request id, "
        "or an exact auth_req_id."
    )
    # No COUNT(*) of the whole table on each page, no date drill-down over a million rows, no facet counts.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = review.CappedCountPaginator
    ordering = ("-created_at",)
    # Sorted by the time of creation only: its index serves every page; another order would sort a million rows.
    sortable_by = ("created",)
    # Other apps' admins add their own inlines after these.
    inlines: ClassVar[tuple[type[admin.options.InlineModelAdmin], ...]] = (AuditEventInline, DeliveryInline)
    actions: tuple[str, ...] = ("cancel_requests", "expire_due_requests")
    fieldsets: ClassVar[Any] = (
        (None, {"fields": ("short_id", "status_now", "client", "user", "binding_message", "scope")}),
        (
            _("Decision"),
            {"fields": ("created", "expires", "decided", "time_to_decision", "acr", "authenticated")},
        ),
        (_("Prompt"), {"fields": ("channel", "prompted", "prompt_failed")}),
        (_("What the agent asked"), {"fields": ("authorization_details_json", "acr_values", "hint_type")}),
    )
    readonly_fields = (
        "short_id",
        "status_now",
        "client",
        "user",
        "binding_message",
        "scope",
        "created",
        "expires",
        "decided",
        "time_to_decision",
        "acr",
        "authenticated",
        "channel",
        "prompted",
        "prompt_failed",
        "authorization_details_json",
        "acr_values",
        "hint_type",
    )
    # Secrets of the agent's: the id it redeems (never shown, never filtered on; searched only by its exact value).
    exclude = ("auth_req_id",)
    secret_columns = frozenset({"auth_req_id"})

    class Media:
        # Column titles that may wrap, so that all nine columns fit beside the filters on a 1400-px screen.
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("approvals/admin.css",)}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        term = request.GET.get(SEARCH_VAR, "").strip()
        if review.looks_like_auth_req_id(term):
            # An agent's auth_req_id, by its unique column: to the request's page, or back to the list, so that no
            # page (not the search box) shows it.
            if not self.has_view_or_change_permission(request):
                raise PermissionDenied
            found = ApprovalRequest.objects.filter(auth_req_id=term).values_list("pk", flat=True).first()
            if found is not None:
                opts = self.opts
                return HttpResponseRedirect(
                    reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[found])
                )
            self.message_user(request, _("No approval request has this auth_req_id."), messages.WARNING)
            rest = request.GET.copy()
            rest.pop(SEARCH_VAR, None)
            return HttpResponseRedirect(f"{request.path}?{rest.urlencode()}" if rest else request.path)
        return super().changelist_view(request, extra_context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ApprovalRequest], search_term: str
    ) -> tuple[QuerySet[ApprovalRequest], bool]:
        return review.search(queryset, search_term), False

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: ApprovalRequest) -> str:
        return admin_datetime(obj.created_at)

    @admin.display(description=_("status"))
    def status_now(self, obj: ApprovalRequest) -> StrOrPromise:
        return review.status_label(obj, timezone.now())

    @admin.display(description=_("agent"))
    def agent(self, obj: ApprovalRequest) -> str:
        return str(obj.client.name or obj.client.client_id)

    @admin.display(description=_("approver"))
    def approver(self, obj: ApprovalRequest) -> str:
        return obj.user.get_username()

    @admin.display(description=_("decided"))
    def decided(self, obj: ApprovalRequest) -> str:
        return review.decided_cell(obj, timezone.now())

    @admin.display(description=_("time to decision"))
    def time_to_decision(self, obj: ApprovalRequest) -> str:
        return review.time_to_decision(obj)

    @admin.display(description=_("channel"))
    def channel(self, obj: ApprovalRequest) -> str:
        return review.channel_cell(obj)

    @admin.display(description=_("tokens issued"))
    def tokens_issued(self, obj: ApprovalRequest) -> str:
        return review.tokens_cell(obj)

    @admin.display(description=_("request"))
    def short_id(self, obj: ApprovalRequest) -> str:
        return str(obj.pk)

    @admin.display(description=_("expires"))
    def expires(self, obj: ApprovalRequest) -> str:
        return admin_datetime(obj.expires_at)

    @admin.display(description=_("authenticated at"))
    def authenticated(self, obj: ApprovalRequest) -> str:
        return admin_datetime(obj.auth_time)

    @admin.display(description=_("prompt sent"))
    def prompted(self, obj: ApprovalRequest) -> str:
        return admin_datetime(obj.prompted_at)

    @admin.display(description=_("prompt failed"))
    def prompt_failed(self, obj: ApprovalRequest) -> str:
        return admin_datetime(obj.prompt_failed_at)

    @admin.display(description=_("authorization details"))
    def authorization_details_json(self, obj: ApprovalRequest) -> str:
        # RFC 9396: exactly what the agent asked for and the person saw; read-only like the rest of the request.
        if not obj.authorization_details:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(obj.authorization_details, indent=2, ensure_ascii=False))

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        # Issue 18: the operator role's, never the viewer's (who may only look).
        return request.user.has_perm("approvals.cancel_approvalrequest")

    @admin.action(description=_("Cancel selected pending requests"), permissions=["cancel"])
    def cancel_requests(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        # One service call per request (approval_request_cancel: atomic, audited with the admin, the agent told);
        # decided requests are left as they are.
        cancelled = sum(
            # The admin site lets only signed-in staff this far.
            services.approval_request_cancel(approval_request_id=pk, actor=cast(User, request.user))
            for pk in queryset.filter(status=ApprovalRequest.Status.PENDING).values_list("pk", flat=True)
        )
        selected = queryset.count()
        if cancelled == selected:
            message = _("Cancelled %(n)d pending request(s); their agents get access_denied.") % {"n": cancelled}
        else:
            message = _(
                "Cancelled %(n)d pending request(s); their agents get access_denied. %(left)d were no longer "
                "pending and were left as they are."
            ) % {"n": cancelled, "left": selected - cancelled}
        self.message_user(request, message, messages.SUCCESS if cancelled else messages.WARNING)

    # Housekeeping the expiry sweep also does, but still a change: the operator's, not the viewer's.
    @admin.action(description=_("Mark every overdue request expired"), permissions=["cancel"])
    def expire_due_requests(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        expired = services.approval_request_expire_due()
        self.message_user(request, _("%(n)d request(s) expired.") % {"n": expired}, messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    # Issue 18: each row names its request (short id, agent, approver) from one joined query, times to the second;
    # newest first, and no whole-table COUNT(*) or date drill-down over millions of events.
    list_display = ("when", "kind", "request_label", "actor")
    list_filter = ("kind",)
    list_select_related = ("request__client", "request__user", "actor")
    raw_id_fields = ("request", "actor")
    ordering = ("-at", "-pk")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = review.CappedCountPaginator

    @admin.display(description=_("at"), ordering="at")
    def when(self, obj: AuditEvent) -> str:
        return admin_datetime(obj.at)

    @admin.display(description=_("request"))
    def request_label(self, obj: AuditEvent) -> str:
        request = obj.request
        url = review.admin_change_url(ApprovalRequest, request.pk)
        agent = request.client.name or request.client.client_id
        label = f"{request.short_id} · {agent} → {request.user.get_username()}"
        return format_html('<a href="{}">{}</a>', url, label) if url else label


def _lockout_state(lockout: lockouts.Lockout) -> str:
    if lockout.locked:
        return str(_("locked until %(until)s") % {"until": admin_datetime(lockout.until)})
    if lockout.failures:
        return str(_("counting until %(until)s") % {"until": admin_datetime(lockout.until)})
    return str(_("not locked"))


@admin.register(ApproverEvent)
class ApproverEventAdmin(ReadOnlyAdmin):
    """What administrators did to approvers (lockouts cleared): append-only."""

    list_display = ("when", "kind", "approver", "actor")
    list_filter = ("kind",)
    list_select_related = ("approver__user", "actor")
    search_fields = ("approver__user__username", "actor__username")
    fields = ("when", "kind", "approver", "actor", "detail")
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description=_("at"), ordering="at")
    def when(self, obj: ApproverEvent) -> str:
        return admin_datetime(obj.at)
