from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from . import selectors, services
from .forms import DecisionForm, UserCodeForm
from .models import ApprovalRequest, Approver


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
