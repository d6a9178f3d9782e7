"""The review API's URLs, mounted at /api/review/ by config.urls."""

from __future__ import annotations

from django.urls import path

from authz.review import api

app_name = "review-api"

urlpatterns = [
    path("audit-events/", api.AuditEventListView.as_view(), name="audit-events"),
    path("approval-requests/", api.ApprovalRequestListView.as_view(), name="approval-requests"),
    path("approval-requests/<uuid:pk>/", api.ApprovalRequestDetailView.as_view(), name="approval-request"),
]
