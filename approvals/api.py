"""The approver's JSON endpoints, for the scripts of their own pages: the pending list the inbox refreshes itself from,
and the Web Push devices the enrolment page subscribes, lists and removes.

DRF views with the project's REST_FRAMEWORK defaults (config/settings.py): the session signs the approver in and
SessionAuthentication checks CSRF on every POST. Around them, as around the approver's pages, login_required sends a
browser without a session to sign in. Every answer is JSON, whatever Accept says, and is not stored; every error is
{"error": message}, the shape the pages' scripts read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO, Any, cast

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils.cache import patch_cache_control
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from approvals import devices, selectors
from approvals.conf import approvals_settings
from approvals.models import Approver, PushSubscription
from approvals.serializers import DeviceSerializer, PendingRequestSerializer

# A PushSubscription's JSON is a few hundred bytes.
MAX_SUBSCRIPTION_BYTES = 8192


class Refused(APIException):
    status_code = status.HTTP_400_BAD_REQUEST


class TooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


def _error_response(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's answer to `exc` as {"error": message}; a service's ValidationError is the request's fault (400)."""
    if isinstance(exc, ValidationError):
        exc = Refused("; ".join(exc.messages))
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": response.data["detail"]}
    return response


class _AnyAccept(DefaultContentNegotiation):
    """JSON whatever Accept asks for, as the approver's other views answer (no 406)."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class _SessionAuthentication(SessionAuthentication):
    """The session, with CSRF checked on the Django request as CsrfViewMiddleware checks every page: a form body is
    read as a form for its csrfmiddlewaretoken, never as the JSON these views parse."""

    def enforce_csrf(self, request: Request) -> None:
        super().enforce_csrf(request._request)  # type: ignore[arg-type]  # DRF's check takes any HttpRequest


class ApproverAPIView(APIView):
    """What every endpoint here shares: the session with its CSRF check, JSON whatever Accept says, errors as
    {"error": message}, and no-store."""

    authentication_classes = [_SessionAuthentication]
    content_negotiation_class = _AnyAccept

    def get_exception_handler(self) -> Any:
        return _error_response

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # They show who asks what of whom (approvals.middleware.NoStoreMiddleware says the same for every page).
        patch_cache_control(response, no_store=True)
        return response


class PushSubscriptionParser(BaseParser):
    """The body as one JSON object, whatever its Content-Type says (json.loads also reads UTF-16 and UTF-32)."""

    media_type = "*/*"

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body = stream.read(MAX_SUBSCRIPTION_BYTES + 1)
        if len(body) > MAX_SUBSCRIPTION_BYTES:
            raise TooLarge(_("The subscription is too large."))
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser's recursion limit still fits in 8 KiB.
            raise Refused(_("The body is not JSON.")) from exc
        if not isinstance(data, dict):
            raise Refused(_("Send the PushSubscription as a JSON object."))
        return data


def _signed_in(request: Request) -> User:
    # login_required and IsAuthenticated let no one else through.
    return cast(User, request.user)


def _webpush_enabled() -> bool:
    return "webpush" in approvals_settings.channel_names()


@method_decorator(login_required, name="dispatch")
class PendingRequestsView(ApproverAPIView):
    """One page of the signed-in approver's pending requests, newest first, for the inbox to refresh itself."""

    http_method_names = ["get"]

    def get(self, request: Request) -> Response:
        page = selectors.approval_requests_pending_page(user=_signed_in(request), page=request.query_params.get("page"))
        return Response(
            {
                "requests": PendingRequestSerializer(page.object_list, many=True).data,
                "count": page.paginator.count,
                "page": page.number,
                "pages": page.paginator.num_pages,
            }
        )


class VapidPublicKeyView(ApproverAPIView):
    """The applicationServerKey a page passes to PushManager.subscribe()."""

    http_method_names = ["get"]
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        if not _webpush_enabled():
            raise NotFound
        return Response({"publicKey": approvals_settings.WEBPUSH["VAPID_PUBLIC_KEY"]})


@method_decorator(login_required, name="dispatch")
class DeviceListView(ApproverAPIView):
    """The approver's Web Push subscriptions (GET), and this browser's new one (POST, W3C Push API
    PushSubscription.toJSON()), which approvals.devices checks and stores."""

    http_method_names = ["get", "post"]
    parser_classes = [PushSubscriptionParser]

    def get(self, request: Request) -> Response:
        if not _webpush_enabled():
            raise NotFound
        approver, _created = Approver.objects.get_or_create(user=_signed_in(request))
        subscriptions = PushSubscription.objects.filter(approver=approver)
        return Response({"devices": DeviceSerializer(subscriptions, many=True).data})

    def post(self, request: Request) -> Response:
        if not _webpush_enabled():
            raise NotFound
        approver, _created = Approver.objects.get_or_create(user=_signed_in(request))
        saved = devices.push_subscription_save(
            approver=approver, subscription=request.data, user_agent=request.headers.get("User-Agent", "")
        )
        return Response(DeviceSerializer(saved).data, status=status.HTTP_201_CREATED)


@method_decorator(login_required, name="dispatch")
class DeviceRemoveView(ApproverAPIView):
    http_method_names = ["post"]

    def post(self, request: Request, pk: int) -> Response:
        approver = Approver.objects.filter(user=_signed_in(request)).first()
        if approver is None or not devices.push_subscription_remove(approver=approver, subscription_id=pk):
            raise NotFound
        return Response(status=status.HTTP_204_NO_CONTENT)
