from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from twilio.request_validator import RequestValidator

from approvals import agents, attempts, devices, links, selectors, services, text
from approvals.conf import approvals_settings
from approvals.forms import DecisionForm, UserCodeForm
from approvals.models import ApprovalRequest, Approver
from approvals.templatetags import approver_ui


class AuthenticatedHttpRequest(HttpRequest):
    # What a login_required view is handed: the decorator lets no anonymous user through (django-stubs' idiom).
    user: User


@login_required
def inbox(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = selectors.approval_requests_pending_page(user=request.user, page=request.GET.get("page"))
    return render(request, "approvals/inbox.html", {"pending": page.object_list, "page": page})


def _page_context(
    request: HttpRequest, approval_request: ApprovalRequest, hold: links.LinkHold | None, *, decide_url: str
) -> dict[str, Any]:
    now = timezone.now()
    status = approval_request.effective_status(now)
    agent = agents.profile(approval_request.client)
    required = links.required_acr(approval_request.acr_values)
    return {
        "approval_request": approval_request,
        "status": status,
        "is_pending": status == ApprovalRequest.Status.PENDING,
        "scopes": selectors.scope_descriptions(approval_request.scopes),
        "agent_name": approval_request.client.name or approval_request.client.client_id,
        "agent_website": agent.website,
        "agent_website_verified": bool(agent.website and agent.website_verified),
        "agent_unverified": text.client_unverified(approval_request.client, agent),
        "decide_url": decide_url,
        "needs_password": not links.satisfies(_achieved_acr(request, hold, now), required),
        "expires_at_iso": approval_request.expires_at.isoformat(),
        # RFC 9396: what exactly the agent will be allowed to do, each shown the way its type describes it.
        "authorization_details": approver_ui.displayed_details(approval_request.authorization_details or []),
    }


def _owner_or_link(request: HttpRequest, pk: str) -> tuple[ApprovalRequest | None, links.LinkHold | None]:
    """The request if this browser may see it: signed in as its owner, or holding its prompt link (approvals.links;
    once spent, only in the browser that spent it). The second value is the link's hold, None for the owner's
    session. (None, None): send the browser to sign in."""
    if request.user.is_authenticated:
        # Another person's request is indistinguishable from one that does not exist.
        return get_object_or_404(ApprovalRequest.objects.select_related("client"), pk=pk, user=request.user), None
    now = timezone.now()
    hold = links.held_link(request.session, pk, now)
    if hold is None:
        return None, None
    approval_request = ApprovalRequest.objects.select_related("client", "user").filter(pk=pk).first()
    if approval_request is None or approval_request.expires_at <= now:
        return None, None  # the hold ends with its request
    if approval_request.link_used_at is not None and not hold.spent:
        return None, None
    return approval_request, hold


def _achieved_acr(request: HttpRequest, hold: links.LinkHold | None, now: datetime) -> str:
    # The link is the session level for its one request; the session's own level otherwise.
    return links.ACR_SESSION if hold is not None else links.achieved_acr(request.session, now)


def detail(request: HttpRequest, pk: str) -> HttpResponse:
    approval_request, hold = _owner_or_link(request, pk)
    if approval_request is None:
        return redirect_to_login(request.get_full_path())
    context = _page_context(request, approval_request, hold, decide_url=reverse("approvals:decide", args=[pk]))
    return render(request, "approvals/detail.html", context)


@require_POST
def decide(request: HttpRequest, pk: str) -> HttpResponse:
    approval_request, hold = _owner_or_link(request, pk)
    if approval_request is None:
        return redirect_to_login(reverse("approvals:detail", args=[pk]))
    return _decide(request, approval_request, hold)


def _decide(request: HttpRequest, approval_request: ApprovalRequest, hold: links.LinkHold | None) -> HttpResponse:
    """Apply Approve or Deny for the request's owner, signed in or holding its link (`hold`), stepping up to a fresh
    password if needed. A link decides as its owner without signing anyone in, and spends itself doing so."""
    back = redirect("approvals:detail", pk=approval_request.pk)
    if hold is not None and hold.spent:
        messages.error(request, _("This request can no longer be decided."))
        return back
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose Approve or Deny."))
        return back
    approve = form.cleaned_data["decision"] == "approve"
    now = timezone.now()
    # Without a hold, _owner_or_link found the request by the signed-in user.
    person = approval_request.user if hold is not None else cast(User, request.user)
    achieved = _achieved_acr(request, hold, now)
    auth_time = hold.opened_at if hold is not None else links.auth_time(request.session)
    if approve and not links.satisfies(achieved, links.required_acr(approval_request.acr_values)):
        password = request.POST.get("password", "")
        if not services.approver_check_step_up_password(user=person, password=password):
            messages.error(request, _("Enter your password correctly to approve this request."))
            return back
        if hold is None:
            links.record_authentication(request.session, now, password=True)
        # By link the password approves this one request: it signs no one in and leaves nothing in the session.
        achieved, auth_time = links.ACR_FRESH_PASSWORD, now
    decided = services.approval_request_decide(
        approval_request_id=approval_request.pk,
        user=person,
        approve=approve,
        acr=achieved,
        auth_time=auth_time,
        by_link=hold is not None,
        now=now,
    )
    if hold is not None and not decided:
        # Spent in another browser, decided in a signed-in session, or expired: only a sign-in shows it now.
        links.drop_held_link(request.session, approval_request.pk)
        messages.info(request, _("This request can no longer be decided with its link. Sign in to see it."))
        return redirect_to_login(reverse("approvals:detail", args=[approval_request.pk]))
    if hold is not None:
        links.spend_held_link(request.session, approval_request.pk)
    if decided and approve:
        messages.success(request, _("Approved."))
    elif decided:
        messages.info(request, _("Denied."))
    else:
        messages.error(request, _("This request can no longer be decided."))
    return back


@require_GET
def link(request: HttpRequest, token: str) -> HttpResponse:
    """The prompt's link: gives this browser a hold on its one request and moves on to the request's page
    (approvals.links). It signs no one in.

    Opening it spends nothing (a link-preview robot cannot use it up); the decision does. The token leaves the
    address bar at once, and this one response carries Referrer-Policy: no-referrer so it is never sent on.
    Wrong tokens count against the request they name and a server-wide rate, never against an address
    (approvals.attempts), so that no one can lock other people out of their links.
    """
    approval_request = links.named_request(token)
    verdict = (
        attempts.attempt(
            attempts.link_limits(request_id=approval_request.pk),
            lambda: links.link_authentic(token, approval_request),
        )
        if approval_request is not None
        else attempts.Verdict.WRONG
    )
    if verdict is attempts.Verdict.LOCKED:
        return render(request, "approvals/link_refused.html", status=429)
    if verdict is attempts.Verdict.WRONG or approval_request is None:
        if attempts.link_flood_counted():
            return render(request, "approvals/link_refused.html", status=429)
        raise Http404
    if request.user.is_authenticated and request.user.pk != approval_request.user_id:
        raise Http404  # someone else's link on a signed-in browser: never switch people silently
    detail_url = reverse("approvals:detail", args=[approval_request.pk])
    now = timezone.now()
    services.approval_request_link_opened(
        approval_request_id=approval_request.pk, signed_in=request.user.is_authenticated, now=now
    )
    usable = approval_request.link_used_at is None and approval_request.expires_at > now
    hold = links.held_link(request.session, approval_request.pk, now)
    if request.user.is_authenticated or (hold is not None and hold.spent):
        # The owner's session, or the browser that decided with this link, which still sees the result.
        response = redirect(detail_url)
    elif usable:
        # A new session key: a session cookie planted in this browser beforehand (fixation) gets no hold.
        request.session.cycle_key()
        links.hold_link(request.session, approval_request, now)
        response = redirect(detail_url)
    else:
        if approval_request.link_used_at is not None:
            messages.info(request, _("This link has already been used. Sign in to see the request."))
        else:
            messages.info(request, _("This request has expired. Sign in to see it."))
        response = redirect_to_login(detail_url)
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def user_code(request: AuthenticatedHttpRequest) -> HttpResponse:
    approver, _created = Approver.objects.get_or_create(user=request.user)
    form = UserCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.approver_set_user_code(approver=approver, user_code=form.cleaned_data["user_code"])
        messages.success(request, _("Your user code is saved."))
        return redirect("approvals:user-code")
    return render(request, "approvals/user_code.html", {"form": form, "approver": approver})


# --- Twilio delivery reports ------------------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest, delivery_id: str) -> HttpResponse:
    """Twilio's StatusCallback for one SMS prompt; only requests signed with our auth token are believed."""
    auth_token = approvals_settings.TWILIO["AUTH_TOKEN"]
    if not auth_token:
        raise Http404
    # The URL Twilio signed is the one we gave it (PUBLIC_URL), whatever Host a proxy forwards.
    url = f"{settings.PUBLIC_URL}{request.path}"
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(auth_token).validate(url, request.POST.dict(), signature):
        return HttpResponse("Invalid signature", status=403, content_type="text/plain")
    devices.delivery_update_from_twilio(delivery_id=delivery_id, params=request.POST.dict(), now=timezone.now())
    return HttpResponse(status=204)


# --- automated approval for certification runs ------------------------------------------------------------------------


ACR_AUTOMATED = "urn:countersign:acr:automated"


@csrf_exempt
@require_http_methods(["GET", "POST"])
def automated_decision(request: HttpRequest) -> JsonResponse:
    """The OpenID conformance suite's automated_ciba_approval_url (e.g. `…?token={auth_req_id}&type={action}`):
    decides a request without its person. Off unless APPROVALS["AUTOMATED_APPROVAL_SECRET"] is set; the caller
    presents that secret (`secret` parameter or a Bearer token); every use is audited as automated."""
    secret = approvals_settings.AUTOMATED_APPROVAL_SECRET
    if not secret:
        raise Http404
    params = request.POST if request.method == "POST" else request.GET
    presented = params.get("secret", "")
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        presented = authorization.removeprefix("Bearer ")
    if not constant_time_compare(presented, secret):
        return JsonResponse({"error": "access_denied"}, status=403)
    auth_req_id = params.get("token") or params.get("auth_req_id") or ""
    action = params.get("type") or params.get("action") or ""
    if action not in ("allow", "deny") or not auth_req_id:
        return JsonResponse(
            {"error": "invalid_request", "error_description": "Send token and type=allow|deny."}, status=400
        )
    approval_request = ApprovalRequest.objects.select_related("user").filter(auth_req_id=auth_req_id[:128]).first()
    if approval_request is None:
        raise Http404
    decided = services.approval_request_decide(
        approval_request_id=approval_request.pk,
        user=approval_request.user,
        approve=action == "allow",
        acr=ACR_AUTOMATED,
        auth_time=timezone.now(),
        automated_by=attempts.client_address(request)[:64] or "unknown",
    )
    if not decided:
        return JsonResponse({"error": "invalid_request", "error_description": "Not pending any more."}, status=409)
    return JsonResponse({"status": "approved" if action == "allow" else "denied"})
