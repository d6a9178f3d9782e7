"""The review API: a read-only JSON view of the audit trail and the approval requests for security tooling (a SIEM
pulling events), at /api/review/ (authz.review.urls).

- Who: active staff with the viewer role's reading of requests and their trail (roles.API_PERMISSIONS: the viewer and
  operator groups), or superusers; anyone else 403, no credentials 401.
- How they sign in: a review token (authz.review.tokens) as `Authorization: Bearer csrv-…`, or the admin's session
  (SessionAuthentication, with its CSRF check on unsafe methods, though every endpoint here only reads).
- Pages: keyset cursors in (time, id) order (authz.review.selectors), oldest first; `next` is the URL of the next
  page while there is one, and `cursor` the position after the last row, to come back later for newer rows.
- Errors: {"error": message}, 400 for a filter it cannot use, never a 500 for what a caller sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.http import Http404
from django.utils import timezone
from django.utils.cache import patch_cache_control
from rest_framework import status
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView, exception_handler

from approvals.models import AuditEvent
from authz.models import ReviewToken
from authz.review import selectors
from authz.review.roles import API_PERMISSIONS
from authz.review.serializers import AUDIT_EVENT_COLUMNS, ApprovalRequestSerializer, AuditEventSerializer
from authz.review.tokens import review_token_find


class BadRequest(APIException):
    status_code = status.HTTP_400_BAD_REQUEST


class ReviewTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <review token>` (RFC 6750 §2.1). A request without that header is left to the session."""

    def authenticate(self, request: Request) -> tuple[Any, ReviewToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Send one token after Bearer.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("The token is not valid.") from exc
        token = review_token_find(raw)
        # The same answer for unknown, expired and revoked tokens, and for a user who may no longer sign in.
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("The token is not valid.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 with a challenge, not 403, when no credentials came.
        return 'Bearer realm="countersign-review"'


class CanReview(BasePermission):
    """Active staff holding the viewer role's permissions; superusers hold every permission."""

    message = "This needs the viewer or operator role."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user is not None
            and user.is_authenticated
            and user.is_active
            and user.is_staff
            and user.has_perms(API_PERMISSIONS)
        )


class _JsonWhateverAccept(DefaultContentNegotiation):
    """JSON whatever Accept asks for (no 406 for a tool that sends Accept: text/html)."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


def _error_response(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, selectors.BadFilter):
        exc = BadRequest(str(exc))
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": response.data["detail"]}
    return response


class ReviewAPIView(APIView):
    authentication_classes = [ReviewTokenAuthentication, SessionAuthentication]
    permission_classes = [CanReview]
    content_negotiation_class = _JsonWhateverAccept
    http_method_names = ["get", "head"]

    def get_exception_handler(self) -> Any:
        return _error_response

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # Who asked what of whom: never kept by a cache on the way.
        patch_cache_control(response, no_store=True)
        return response

    def page_response(self, request: Request, page: selectors.Page, results: Any) -> Response:
        more = page.more and page.cursor is not None
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", page.cursor) if more else None
        return Response({"results": results, "next": next_url, "cursor": page.cursor})


class AuditEventListView(ReviewAPIView):
    """GET /api/review/audit-events/: filters since, until (ISO 8601; since inclusive, until exclusive), agent
    (client_id), approver (username), kind, request (an approval request's id); agent, approver, kind and request may
    repeat. Pages: limit (1-1000, default 100) and cursor."""

    def get(self, request: Request) -> Response:
        params = request.query_params
        rows = selectors.audit_events(params)
        page = selectors.keyset_page(
            rows, "at", cursor=params.get("cursor"), limit=selectors.limit_from(params), id_type=selectors.event_id
        )
        return self.page_response(request, page, AuditEventSerializer(page.rows, many=True).data)


class ApprovalRequestListView(ReviewAPIView):
    """GET /api/review/approval-requests/: filters since, until (on created_at), agent, approver, status (as the
    agent sees it), decided_via; pages as for audit events."""

    def get(self, request: Request) -> Response:
        params = request.query_params
        now = timezone.now()
        rows = selectors.approval_requests(params, now=now)
        page = selectors.keyset_page(
            rows, "created_at", cursor=params.get("cursor"), limit=selectors.limit_from(params), id_type=UUID
        )
        data = ApprovalRequestSerializer(page.rows, many=True, context={"now": now}).data
        return self.page_response(request, page, data)


class ApprovalRequestDetailView(ReviewAPIView):
    """GET /api/review/approval-requests/<id>/: one request with its whole audit trail."""

    def get(self, request: Request, pk: UUID) -> Response:
        if request.query_params:
            raise BadRequest("This endpoint takes no parameters.")
        now = timezone.now()
        row = selectors.approval_requests({}, now=now).filter(pk=pk).first()
        if row is None:
            raise Http404
        events = AuditEvent.objects.filter(request_id=pk).order_by("at", "id").values(*AUDIT_EVENT_COLUMNS)
        data = dict(ApprovalRequestSerializer(row, context={"now": now}).data)
        data["events"] = AuditEventSerializer(events, many=True).data
        return Response(data)
