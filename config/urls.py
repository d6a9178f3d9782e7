from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from approvals import pwa
from approvals.forms import SignInForm
from authz.review.overview_page import urlpatterns as review_admin_urls
from authz.urls import oauth_patterns


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers; touches neither the database nor Redis (also the benchmark's ceiling)."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz/", healthz, name="healthz"),
    path("sw.js", pwa.service_worker, name="service-worker"),
    path("manifest.webmanifest", pwa.manifest, name="manifest"),
    # DOT's views and ours share the oauth2_provider namespace, so DOT's discovery and issuer logic find the
    # documents at the origin's root (issuer = https://host, RFC 8414 §3).
    path("", include((oauth_patterns, "oauth2_provider"))),
    path("approvals/", include("approvals.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=SignInForm), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The admin's review pages (issue 18), behind the admin's sign-in, before the admin's own catch-all.
    path("admin/review/", include((review_admin_urls, "admin-review"))),
    path("admin/", admin.site.urls),
    # The read-only review API for security tooling (issue 18; docs/admin.md#audit-trail-and-api).
    path("api/review/", include("authz.review.urls")),
]
