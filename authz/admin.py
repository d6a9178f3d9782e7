from __future__ import annotations

import json
from typing import Any, TypeAlias, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from approvals.admin import ApprovalRequestAdmin, ReadOnlyAdmin, ReadOnlyInline, SafeLookupsMixin, SafeSelectionMixin
from approvals.display import admin_datetime
from approvals.models import ApprovalRequest
from approvals.review import admin_change_url
from authz.models import (
    AgentEvent,
    AuthorizationDetailType,
    CibaClient,
    Notification,
    NotificationAttempt,
    RequestCallback,
    TokenDetails,
    ciba_client_of,
    client_deregistered,
)
from authz.review import actions as review_actions
from authz.review import admin as review_admin  # noqa: F401  (the audit export, the API's tokens)
from authz.review import agents as agent_figures
from authz.review import timeline as review_timeline
from authz.review.confirm import confirmation_page, confirmed
from authz.tokens import details, trail
from authz.tokens.trail import CHECKSUM_PREFIX

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


class AgentChangeList(ChangeList):
    """The application list, with each listed agent's figures (authz.review.agents) read in one query per page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        stats = agent_figures.agent_stats(obj.pk for obj in self.result_list)
        for obj in self.result_list:
            obj.agent_stats = stats.get(obj.pk, agent_figures.EMPTY)


@admin.register(Application)
class ApplicationAdmin(SafeLookupsMixin, SafeSelectionMixin, BaseApplicationAdmin):
    """DOT's client admin with the client's CIBA settings alongside, each agent's figures over the last 30 days
    (issue 18), and the actions to suspend and resume agents (authz.review.actions)."""

    inlines = (*getattr(BaseApplicationAdmin, "inlines", ()), CibaClientInline)
    list_display = (
        *BaseApplicationAdmin.list_display,
        "ciba_mode",
        "agent_state",
        "identity",
        "requests_30d",
        "approval_rate",
        "median_decision",
        "prompt_failures",
        "last_request",
    )
    list_select_related = ("ciba", "user")
    readonly_fields = (*BaseApplicationAdmin.readonly_fields, "agent_state_detail", "agent_activity", "agent_events")
    actions = ("suspend_agents", "resume_agents")
    # The client secret: a hash, or the secret itself where "Hash client secret" was left off in DOT's form. Never
    # filtered on, and not on the page of those who may only look (the viewer and operator roles, issue 18).
    secret_columns = frozenset({"client_secret"})

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An agent that deleted its registration is kept only as the record of its requests (RFC 7592, issue 18): a
        # save would bring back settings, a secret or keys a client is entitled to have gone.
        if obj is not None and client_deregistered(obj):
            return False
        return bool(super().has_change_permission(request, obj))

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        exclude = tuple(super().get_exclude(request, obj) or ())
        if obj is not None and not self.has_change_permission(request, obj):
            exclude = (*exclude, "client_secret")
        return exclude

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        if change:
            # has_change_permission read the agent before this save: one that deleted its registration meanwhile
            # (authz.review.actions.agent_deregister) must not get its settings, secret or keys written back. Locked
            # in the order the deregistration takes its locks (the application first), inside the admin's
            # transaction, so that it is either wholly before this save or seen here.
            type(obj).objects.select_for_update(no_key=True).filter(pk=obj.pk).values_list("pk").first()
            if CibaClient.objects.filter(application_id=obj.pk, deregistered_at__isnull=False).exists():
                raise PermissionDenied("This agent deleted its registration; its record is read-only.")
        super().save_model(request, obj, form, change)

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # What an administrator saves bounds the client's own registration updates
        # (RFC 7592, authz.clients.registration).
        ciba = CibaClient.objects.filter(application=form.instance).first()
        if ciba is not None:
            ciba.admin_limits_record(now=timezone.now())

    @admin.display(description="CIBA delivery")
    def ciba_mode(self, obj: Any) -> str:
        ciba = ciba_client_of(obj)
        return ciba.backchannel_token_delivery_mode if ciba and ciba.ciba_enabled else "—"

    # --- the agent's review (issue 18 item 3) ---------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return agent_figures.with_last_request(super().get_queryset(request))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AgentChangeList

    def _stats(self, obj: Any) -> agent_figures.AgentStats:
        stats: agent_figures.AgentStats | None = getattr(obj, "agent_stats", None)
        if stats is None:  # the change page: this one agent
            stats = agent_figures.agent_stats([obj.pk]).get(obj.pk, agent_figures.EMPTY) if obj.pk else None
            obj.agent_stats = stats = stats or agent_figures.EMPTY
        return stats

    @admin.display(description="status")
    def agent_state(self, obj: Any) -> str:
        ciba = ciba_client_of(obj)
        if ciba is None:
            return "—"
        if ciba.deregistered_at is not None:
            return "registration deleted"
        return "suspended" if ciba.suspended_at is not None else "active"

    @admin.display(description="name and website")
    def identity(self, obj: Any) -> str:
        """Whether an administrator verified who runs the agent ("website verified" covers its name too, see
        authz.clients.registration.policy); approvers see a self-registered, unverified agent marked so
        (approvals.text.client_unverified)."""
        ciba = ciba_client_of(obj)
        if ciba is None:
            return "—"
        if ciba.website_verified:
            return "verified"
        if obj.registration_source == Application.RegistrationSource.DCR:
            return "unverified (registered itself)"
        return "not verified (added by staff)"

    @admin.display(description="requests (30 days)")
    def requests_30d(self, obj: Any) -> int:
        return self._stats(obj).requests

    @admin.display(description="approval rate")
    def approval_rate(self, obj: Any) -> str:
        stats = self._stats(obj)
        return f"{agent_figures.percent_text(stats.approval_rate)} of {stats.decided}" if stats.decided else "-"

    @admin.display(description="median time to decision")
    def median_decision(self, obj: Any) -> str:
        return agent_figures.duration_text(self._stats(obj).median_decision)

    @admin.display(description="prompt failures (30 days)")
    def prompt_failures(self, obj: Any) -> int:
        return self._stats(obj).prompt_failures

    @admin.display(description="last request", ordering="last_request_at")
    def last_request(self, obj: Any) -> str:
        return admin_datetime(getattr(obj, "last_request_at", None))

    @admin.display(description="suspension")
    def agent_state_detail(self, obj: Any) -> str:
        ciba = ciba_client_of(obj) if obj.pk else None
        if ciba is None:
            return "—"
        if ciba.deregistered_at is not None:
            return (
                f"Deleted its registration at {admin_datetime(ciba.deregistered_at)} (RFC 7592): its client_id, "
                "secret and keys no longer authenticate, its pending requests were cancelled and its tokens revoked. "
                "Kept, read-only, for its requests' audit trail; it cannot be resumed."
            )
        if ciba.suspended_at is None:
            return "Active: it may make requests."
        by = ciba.suspended_by.get_username() if ciba.suspended_by else "an account since removed"
        reason = f" Reason: {ciba.suspension_reason}" if ciba.suspension_reason else ""
        return (
            f"Suspended at {admin_datetime(ciba.suspended_at)} by {by}: its requests and token requests are refused "
            f"with unauthorized_client.{reason}"
        )

    @admin.display(description="activity (30 days)")
    def agent_activity(self, obj: Any) -> str:
        if not obj.pk:
            return "—"
        stats = self._stats(obj)
        last = admin_datetime(getattr(obj, "last_request_at", None))
        rate, median = (
            agent_figures.percent_text(stats.approval_rate),
            agent_figures.duration_text(stats.median_decision),
        )
        return (
            f"{stats.requests} requests, {stats.decided} decided by a person, approval rate {rate}, median time to "
            f"decision {median}, {stats.prompt_failures} prompt failures; last request {last}"
        )

    @admin.display(description="suspensions, resumptions, deletion")
    def agent_events(self, obj: Any) -> str:
        events = (
            list(AgentEvent.objects.filter(client__application_id=obj.pk).select_related("actor")[:10])
            if obj.pk
            else []
        )
        if not events:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    admin_datetime(event.at),
                    event.get_kind_display(),
                    event.actor.get_username() if event.actor else "-",
                    event.detail.get("reason", "") if isinstance(event.detail, dict) else "",
                )
                for event in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>at</th><th>what</th><th>by</th><th>reason</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # --- suspend and resume (issue 18 item 2) ---------------------------------------------------------------------

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("authz.suspend_cibaclient")

    @admin.action(description="Suspend selected agents", permissions=["suspend"])
    def suspend_agents(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> HttpResponse | None:
        cibas = list(CibaClient.objects.filter(application__in=queryset).select_related("application"))
        if not cibas:
            self.message_user(request, "None of the selected applications is an agent.", messages.WARNING)
            return None
        if not confirmed(request):
            return confirmation_page(
                self,
                request,
                queryset,
                action="suspend_agents",
                title="Suspend agents",
                question="Suspend these agents? At once:",
                effects=(
                    "Their pending requests are cancelled (a ping or push agent is told access_denied).",
                    "Every token they hold is revoked, with the tokens exchanged from them: introspection answers "
                    "inactive, userinfo refuses them, refresh tokens stop working.",
                    "New requests and token requests (polls, refresh, exchange, client credentials) are refused "
                    "with unauthorized_client.",
                    "You can resume them later; what was cancelled or revoked stays so.",
                ),
                labels=(ciba.application.name or ciba.application.client_id for ciba in cibas),
                confirm_label="Yes, suspend them",
                reason_field=True,
            )
        actor = cast(User, request.user)  # the admin site lets only signed-in staff this far
        reason = request.POST.get("reason", "")
        done = [review_actions.agent_suspend(ciba=ciba, actor=actor, reason=reason) for ciba in cibas]
        suspended = [result for result in done if result is not None]
        if suspended:
            self.message_user(
                request,
                f"Suspended {len(suspended)} agent(s): {sum(s.cancelled for s in suspended)} pending request(s) "
                f"cancelled, {sum(s.revoked.access_tokens for s in suspended)} access token(s) and "
                f"{sum(s.revoked.refresh_tokens for s in suspended)} refresh token(s) revoked.",
                messages.SUCCESS,
            )
        if len(suspended) < len(done):
            self.message_user(
                request,
                f"{len(done) - len(suspended)} agent(s) were suspended already; left as they were.",
                messages.INFO,
            )
        return None

    @admin.action(description="Resume selected suspended agents", permissions=["suspend"])
    def resume_agents(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        actor = cast(User, request.user)
        cibas = CibaClient.objects.filter(application__in=queryset).select_related("application")
        resumed = sum(review_actions.agent_resume(ciba=ciba, actor=actor) for ciba in cibas)
        if resumed:
            self.message_user(request, f"Resumed {resumed} agent(s): they may make requests again.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                "None of the selected agents was suspended (an agent that deleted its registration stays so).",
                messages.WARNING,
            )


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


class TokensReadOnly(SafeLookupsMixin):
    """Tokens are issued and revoked by the protocol and by the audited review actions (authz.review.actions), never
    added, edited, deleted or revoked row by row here: no add, change or delete permission and no actions, for
    superusers too."""

    actions: tuple[str, ...] = ()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}


# DOT's token admin, chosen in its settings at run time.
BaseAccessTokenAdmin: TypeAlias = oauth2_settings.ACCESS_TOKEN_ADMIN_CLASS

if admin.site.is_registered(AccessToken):
    admin.site.unregister(AccessToken)


@admin.register(AccessToken)
class AccessTokenAdmin(TokensReadOnly, BaseAccessTokenAdmin):
    """DOT's token admin, read-only (issue 18), with the approved authorization_details, the exchange chain and the
    approval request the token stands for. The token's value is never stored (only DOT's checksum); a prefix of the
    checksum tells tokens apart."""

    inlines = (*getattr(BaseAccessTokenAdmin, "inlines", ()), TokenDetailsInline)
    list_display = ("pk", "checksum_prefix", "user", "application", "expires", "approval_request")
    list_select_related = ("application", "user")
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        # The request a token was issued for (or refreshed into), in the list's one query.
        issued_for = ApprovalRequest.objects.filter(access_token=models.OuterRef("pk")).values("pk")[:1]
        queryset: models.QuerySet[Any] = (
            super().get_queryset(request).annotate(approval_request_id=models.Subquery(issued_for))
        )
        return queryset

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        hidden = {"token", "token_checksum"}
        own = [f.name for f in AccessToken._meta.fields if f.name not in hidden]
        return ["checksum_prefix", "approval_request", *own]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("token", "token_checksum")

    @admin.display(description="checksum")
    def checksum_prefix(self, obj: Any) -> str:
        return f"{obj.token_checksum[:CHECKSUM_PREFIX]}…" if obj.token_checksum else "-"

    @admin.display(description="approval request")
    def approval_request(self, obj: Any) -> str:
        request_id = getattr(obj, "approval_request_id", None)
        via_exchange = False
        if request_id is None and getattr(obj, "_detail_page", False):
            # Exchanged tokens reach their request up the subject-token chain (RFC 8693): on the token's page only.
            request_id = trail.request_of_token(obj.pk)
            via_exchange = request_id is not None
        if request_id is None:
            return "-"
        url = admin_change_url(ApprovalRequest, request_id)
        label = str(request_id)[:8] + (" (exchanged from its token)" if via_exchange else "")
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._detail_page = True
        return obj


# The other token admins of DOT: read-only as well (issue 18), their revoke actions gone with the rest.
for _token_model in (get_refresh_token_model(), get_id_token_model(), get_grant_model()):
    if admin.site.is_registered(_token_model):
        _base = type(admin.site.get_model_admin(_token_model))
        admin.site.unregister(_token_model)
        admin.site.register(_token_model, type(f"ReadOnly{_base.__name__}", (TokensReadOnly, _base), {}))


class RequestCallbackInline(ReadOnlyInline):
    """Where the agent is called back; its client_notification_token is the agent's secret, never shown."""

    model = RequestCallback
    fields = ("mode", "endpoint")
    readonly_fields = fields


class NotificationTimes:
    """A callback's times to the second with their zone, as every review page shows them (issue 18), not Django's
    "June 1, 2026, 9:14 a.m."."""

    @admin.display(description="created at", ordering="created_at")
    def created(self, obj: Notification | NotificationAttempt) -> str:
        return admin_datetime(obj.created_at)

    @admin.display(description="deadline")
    def gives_up_at(self, obj: Notification) -> str:
        return admin_datetime(obj.deadline)

    @admin.display(description="finished at")
    def finished(self, obj: Notification | NotificationAttempt) -> str:
        return admin_datetime(obj.finished_at)


class NotificationInline(NotificationTimes, ReadOnlyInline):
    model = Notification
    fields = ("mode", "outcome", "status", "attempts", "created", "gives_up_at", "finished", "error")
    readonly_fields = fields


class NotificationAttemptInline(NotificationTimes, ReadOnlyInline):
    model = NotificationAttempt
    fields = ("created", "attempt", "status", "http_status", "latency_ms", "error")
    readonly_fields = fields


@admin.register(Notification)
class NotificationAdmin(NotificationTimes, ReadOnlyAdmin):
    """Ping and push callbacks to agents; an undeliverable one stays here (its tokens are never shown)."""

    list_display = ("created", "request", "mode", "outcome", "status", "attempts", "error")
    list_filter = ("status", "mode", "outcome")
    list_select_related = ("request",)
    search_fields = ("request__id",)
    date_hierarchy = "created_at"
    fields = ("request", "mode", "outcome", "status", "attempts", "created", "gives_up_at", "finished", "error")
    readonly_fields = fields
    inlines = (NotificationAttemptInline,)


# The request's page in admin shows the callback its agent was owed: authz adds it, approvals knows nothing of it.
admin.site.unregister(ApprovalRequest)


class DeliveryModeFilter(admin.SimpleListFilter):
    """CIBA token delivery mode of the request (its RequestCallback; a poll request has none)."""

    title = "delivery mode"
    parameter_name = "mode"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("poll", "poll"), *RequestCallback.Mode.choices]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet[ApprovalRequest]) -> Any:
        value = self.value()
        if value == "poll":
            return queryset.filter(callback__isnull=True)
        if value in RequestCallback.Mode.values:
            return queryset.filter(callback__mode=value)
        return queryset


# The most requests one "revoke" confirms at once (its form carries their ids).
REVOKE_AT_MOST = 500


@admin.register(ApprovalRequest)
class ApprovalRequestWithNotificationAdmin(ApprovalRequestAdmin):
    # Issue 18: the page's timeline (authz.review.timeline) shows the trail, every prompt delivery and every
    # ping/push attempt, so those inlines go; the callback's settings stay, for ping and push requests only.
    inlines = (RequestCallbackInline, NotificationInline)
    list_filter = (*ApprovalRequestAdmin.list_filter, DeliveryModeFilter)
    # Cancel (approvals' own) and revoke (authz.review.actions): neither approves nor denies anything.
    actions = (*ApprovalRequestAdmin.actions, "revoke_tokens")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.revoke_approvalrequest_tokens")

    @admin.action(description="Revoke the tokens of selected requests", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: models.QuerySet[ApprovalRequest]) -> HttpResponse | None:
        if not confirmed(request):
            # The confirmation page posts each selected id back: "select all" over a million requests would build a
            # page of a million ids, and Django refuses a form of over 1,000 fields (DATA_UPLOAD_MAX_NUMBER_FIELDS).
            if queryset[: REVOKE_AT_MOST + 1].count() > REVOKE_AT_MOST:
                self.message_user(
                    request,
                    f"Select at most {REVOKE_AT_MOST} requests at a time (filter the list first); nothing was revoked.",
                    messages.WARNING,
                )
                return None
            shown = list(queryset.select_related("client", "user")[:100])
            labels = [f"{str(r.pk)[:8]} · {r.client.name or r.client.client_id} → {r.user}" for r in shown]
            if len(shown) == 100:
                labels.append("… and the others selected")
            return confirmation_page(
                self,
                request,
                queryset,
                action="revoke_tokens",
                title="Revoke tokens",
                question="Revoke the tokens of these requests? At once:",
                effects=(
                    "Their access tokens, their refresh tokens and every token exchanged from them stop working: "
                    "introspection answers inactive, userinfo and resource servers refuse them.",
                    "The agents are not told; their next call with these tokens fails, and a new approval needs a "
                    "new request.",
                    "Each request records who revoked its tokens.",
                ),
                labels=labels,
                confirm_label="Yes, revoke their tokens",
            )
        actor = cast(User, request.user)  # the admin site lets only signed-in staff this far
        ids = list(queryset.values_list("pk", flat=True))
        requests, revoked = review_actions.requests_tokens_revoke(request_ids=ids, actor=actor)
        if requests:
            self.message_user(
                request,
                f"Revoked the tokens of {requests} request(s): {revoked.access_tokens} access token(s) and "
                f"{revoked.refresh_tokens} refresh token(s).",
                messages.SUCCESS,
            )
        if requests < len(ids):
            self.message_user(
                request, f"{len(ids) - requests} request(s) had no live tokens; nothing to revoke.", messages.INFO
            )
        return None

    # --- the request's page (issue 18): tidy fields above, the timeline below ------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> Any:
        fieldsets = [
            (name, {**options, "fields": tuple("agent_link" if f == "client" else f for f in options["fields"])})
            for name, options in super().get_fieldsets(request, obj)
        ]
        return [*fieldsets, ("Timeline", {"fields": ("timeline",)})]

    def get_readonly_fields(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "agent_link", "timeline")

    def get_inlines(self, request: HttpRequest, obj: ApprovalRequest | None) -> Any:
        # A poll request has no callback: empty "request callback" and "client notification" tables only confuse.
        if obj is None or not RequestCallback.objects.filter(request=obj).exists():
            return ()
        return super().get_inlines(request, obj)

    @admin.display(description="agent")
    def agent_link(self, obj: ApprovalRequest) -> str:
        client = obj.client
        label = f"{client.name or client.client_id} ({client.client_id})" if client.name else client.client_id
        url = admin_change_url(Application, client.pk)
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description="what happened")
    def timeline(self, obj: ApprovalRequest) -> str:
        return review_timeline.render(review_timeline.timeline(obj))


@admin.register(AgentEvent)
class AgentEventAdmin(ReadOnlyAdmin):
    """What administrators did to agents as a whole (suspended, resumed): append-only."""

    list_display = ("when", "kind", "agent", "actor", "reason")
    list_filter = ("kind",)
    list_select_related = ("client__application", "actor")
    search_fields = ("client__application__name", "client__application__client_id", "actor__username")
    fields = ("when", "kind", "agent", "actor", "detail")
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="at", ordering="at")
    def when(self, obj: AgentEvent) -> str:
        return admin_datetime(obj.at)

    @admin.display(description="agent")
    def agent(self, obj: AgentEvent) -> str:
        application = obj.client.application
        return str(application.name or application.client_id)

    @admin.display(description="reason")
    def reason(self, obj: AgentEvent) -> str:
        return str(obj.detail.get("reason", "")) if isinstance(obj.detail, dict) else ""
