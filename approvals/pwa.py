"""The approver's phone: the Web Push enrolment page, the service worker and the manifest. The JSON endpoints the
pages' scripts call are approvals.api.

The pages themselves are plain templates; everything dynamic is in approvals/static/approvals/*.js, loaded as
files (never inline), so the site can send a strict Content-Security-Policy.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from approvals.conf import approvals_settings
from approvals.views import AuthenticatedHttpRequest

SERVICE_WORKER = Path(__file__).resolve().parent / "static" / "approvals" / "sw.js"
THEME_COLOR = "#1d3557"
BACKGROUND_COLOR = "#f6f7f9"


@login_required
@require_GET
def enrol(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The enrolment page: subscribes this browser to Web Push and lists the approver's devices."""
    # Without the Web Push channel the JSON endpoints answer 404: say so at once instead of asking them.
    webpush_enabled = "webpush" in approvals_settings.channel_names()
    return render(request, "approvals/enrol.html", {"webpush_enabled": webpush_enabled})


@lru_cache(maxsize=1)
def _service_worker_source() -> bytes:
    return SERVICE_WORKER.read_bytes()


@require_GET
def service_worker(request: HttpRequest) -> HttpResponse:
    """The service worker, from the site's root so that its scope is the whole site."""
    response = HttpResponse(_service_worker_source(), content_type="application/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    # Browsers revalidate the worker on navigation; make sure an update is seen at once.
    response["Cache-Control"] = "no-cache"
    return response


@require_GET
def manifest(request: HttpRequest) -> JsonResponse:
    """The web app manifest, so the approver can add Countersign to the home screen (required for push on iOS)."""
    icons = []
    for size in (192, 512):
        for purpose in ("any", "maskable"):
            icons.append(
                {
                    "src": static(f"approvals/icon-{size}.png"),
                    "sizes": f"{size}x{size}",
                    "type": "image/png",
                    "purpose": purpose,
                }
            )
    response = JsonResponse(
        {
            "name": "Countersign",
            "short_name": "Countersign",
            "description": _("Approve or deny what AI agents ask to do for you."),
            "lang": get_language() or "en",
            "start_url": reverse("approvals:inbox"),
            "scope": "/",
            "display": "standalone",
            "orientation": "portrait",
            "theme_color": THEME_COLOR,
            "background_color": BACKGROUND_COLOR,
            "icons": icons,
        },
        content_type="application/manifest+json",
        json_dumps_params={"ensure_ascii": False},
    )
    response["Cache-Control"] = "public, max-age=3600"
    return response
