"""The confirmation step of the review's admin actions that cannot be undone (issue 18: revoke a request's tokens,
suspend an agent), as Django's "delete selected" has one: the action first answers with a page saying what will
happen to which objects, whose form posts the same action back with post=yes; only then does it act."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


def confirmed(request: HttpRequest) -> bool:
    """Whether this POST is the confirmation page's (the action's second step)."""
    return request.POST.get("post") == "yes"


def confirmation_page(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    question: str,
    effects: Iterable[str],
    labels: Iterable[str],
    confirm_label: str,
    reason_field: bool = False,
) -> TemplateResponse:
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "question": question,
        "effects": list(effects),
        "objects_heading": opts.verbose_name_plural.capitalize() if opts.verbose_name_plural else "",
        "object_labels": list(labels),
        "queryset": queryset,
        "opts": opts,
        "action_name": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirm_label": confirm_label,
        "reason_field": reason_field,
        "media": model_admin.media,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/review/confirm_action.html", context)
