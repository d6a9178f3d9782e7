from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from twilio.request_validator import RequestValidator

from . import devices, selectors, services
from .conf import approvals_settings
from .forms import DecisionForm, UserCodeForm
from .models import ApprovalRequest, Approver, PushSubscription


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    pending = selectors.approval_requests_pending_for(user=request.user)
    return render(request, "approvals/inbox.html", {"pending": pending})


@login_required
def detail(request: HttpRequest, pk: str) -> HttpResponse:
    # Another person's request is indistinguishable from one that does not exist.
    approval_request = get_object_or_404(ApprovalRequest.objects.select_related("client"), pk=pk, user=request.user)
    status = approval_request.effective_status(timezone.now())
    return render(
        request,
        "approvals/detail.html",
        {
            "approval_request": approval_request,
            "status": status,
            "is_pending": status == ApprovalRequest.Status.PENDING,
            "scopes": selectors.scope_descriptions(approval_request.scopes),
        },
    )


@login_required
@require_POST
def decide(request: HttpRequest, pk: str) -> HttpResponse:
    approval_request = get_object_or_404(ApprovalRequest, pk=pk, user=request.user)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose Approve or Deny."))
        return redirect("approvals:detail", pk=approval_request.pk)
    approve = form.cleaned_data["decision"] == "approve"
    if services.approval_request_decide(approval_request_id=approval_request.pk, user=request.user, approve=approve):
        messages.success(request, _("Approved.") if approve else _("Denied."))
    else:
        messages.error(request, _("This request can no longer be decided."))
    return redirect("approvals:detail", pk=approval_request.pk)


@login_required
@require_http_methods(["GET", "POST"])
def user_code(request: HttpRequest) -> HttpResponse:
    approver, _created = Approver.objects.get_or_create(user=request.user)
    form = UserCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.approver_set_user_code(approver=approver, user_code=form.cleaned_data["user_code"])
        messages.success(request, _("Your user code is saved."))
        return redirect("approvals:user-code")
    return render(request, "approvals/user_code.html", {"form": form, "approver": approver})


# --- Web Push devices (JSON, for the page that subscribes) -----------------------------------------------------


def _webpush_enabled() -> bool:
    return "webpush" in approvals_settings.channel_names()


@require_GET
def vapid_public_key(request: HttpRequest) -> JsonResponse:
    """The applicationServerKey a page passes to PushManager.subscribe()."""
    if not _webpush_enabled():
        raise Http404
    return JsonResponse({"publicKey": approvals_settings.WEBPUSH["VAPID_PUBLIC_KEY"]})


@login_required
@require_http_methods(["GET", "POST"])
def device_list(request: HttpRequest) -> JsonResponse:
    if not _webpush_enabled():
        raise Http404
    approver, _created = Approver.objects.get_or_create(user=request.user)
    if request.method == "POST":
        if len(request.body) > 8192:
            return JsonResponse({"error": _("The subscription is too large.")}, status=413)
        try:
            subscription = json.loads(request.body)
            if not isinstance(subscription, dict):
                raise ValidationError(_("Send the PushSubscription as a JSON object."))
            saved = devices.push_subscription_save(
                approver=approver, subscription=subscription, user_agent=request.headers.get("User-Agent", "")
            )
        except (ValueError, RecursionError, ValidationError) as exc:
            # RecursionError: JSON nested deeper than the parser's recursion limit still fits in 8 KiB.
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else _("The body is not JSON.")
            return JsonResponse({"error": message}, status=400)
        return JsonResponse(_device_json(saved), status=201)
    subscriptions = PushSubscription.objects.filter(approver=approver)
    return JsonResponse({"devices": [_device_json(subscription) for subscription in subscriptions]})


@login_required
@require_POST
def device_remove(request: HttpRequest, pk: int) -> HttpResponse:
    approver = get_object_or_404(Approver, user=request.user)
    if not devices.push_subscription_remove(approver=approver, subscription_id=pk):
        raise Http404
    return HttpResponse(status=204)


def _device_json(subscription: PushSubscription) -> dict[str, object]:
    return {
        "id": subscription.pk,
        "service": subscription.service_host,
        "user_agent": subscription.user_agent,
        "created_at": subscription.created_at.isoformat(),
        "last_success_at": subscription.last_success_at.isoformat() if subscription.last_success_at else None,
        "disabled": subscription.disabled_at is not None,
    }


# --- Twilio delivery reports -------------------------------------------------------------------------------------


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
