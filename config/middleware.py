"""Request hygiene that every view relies on, so that no endpoint has to remember it."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache
from typing import Any

import csp.constants as csp_constants
import csp.middleware as csp_middleware
import csp.utils as csp_utils
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as session_middleware
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.files import uploadhandler
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.http.request import HttpHeaders
from django.middleware import csrf
from django.utils.deprecation import MiddlewareMixin

NUL_DESCRIPTION = "Parameters, headers and paths must not contain NUL characters."
TOO_LARGE_DESCRIPTION = "The request body is too large."


_HEADER_PREFIX = HttpHeaders.HTTP_PREFIX
_UNPREFIXED_HEADERS = frozenset(HttpHeaders.UNPREFIXED_HEADERS)


class RefuseNulMiddleware:
    """Refuse a NUL in the path, the query string, a header or a form body, before any view runs.

    PostgreSQL text cannot hold NUL: a value that reaches a query with one in it raises DataError, a 500, and nothing
    Countersign reads has a use for NUL. A form-urlencoded value decodes to NUL only from `%00` or a raw NUL byte (a
    literal percent sign is sent as `%25`), so scanning the raw bytes decides exactly what parsing would, without
    parsing. A multipart/form-data field (what request.POST also reads) may be base64 (RFC 2045
    Content-Transfer-Encoding, which Django decodes), so those bodies are parsed, on a copy. Headers too: gunicorn
    refuses a NUL in one, other servers (runserver among them) pass it on, and some are stored (a device's
    User-Agent). The answer is RFC 6749 section 5.2's invalid_request, which is also how the automated approval
    endpoint answers bad parameters. JSON bodies are their views' to check, each with its own error (registration,
    devices).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "\x00" in query or "%00" in query:
            return _refused()
        # The headers as request.headers would list them, read from META without building that mapping (polls).
        meta = request.META
        if any("\x00" in meta[key] for key in meta if key.startswith(_HEADER_PREFIX) or key in _UNPREFIXED_HEADERS):
            return _refused()
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                body = request.body
            except RequestDataTooBig:
                if content_type == "multipart/form-data":
                    # Django streams a multipart body's files past DATA_UPLOAD_MAX_MEMORY_SIZE and still fills
                    # request.POST, unread here. No view takes uploads: such a body has no use but to smuggle a field.
                    return _refused(TOO_LARGE_DESCRIPTION, status=413)
                body = b""  # a form-encoded one fails the same way in the view, which answers in its own words (413)
            except ValueError:
                body = b""  # an invalid Content-Length: the view answers in its own words (400)
            if content_type == "multipart/form-data":
                if _multipart_has_nul(request, body):
                    return _refused()
            elif b"\x00" in body or b"%00" in body:
                return _refused()
        return self.get_response(request)


def _multipart_has_nul(request: HttpRequest, body: bytes) -> bool:
    """Whether a multipart/form-data body has a NUL in a field name or value, as Django will decode them. Parsed from
    a copy with handlers of its own, so the view still reads the request as it came."""
    handlers = [uploadhandler.load_handler(path, request) for path in settings.FILE_UPLOAD_HANDLERS]
    try:
        fields, files = MultiPartParser(request.META, io.BytesIO(body), handlers, request.encoding).parse()
    except (MultiPartParserError, SuspiciousOperation, BadRequest, ValueError):
        return False  # malformed: the view's own reading of it answers
    values = [value for _name, items in fields.lists() for value in items]
    return any("\x00" in text for text in [*fields.keys(), *values, *files.keys()])


def _refused(description: str = NUL_DESCRIPTION, *, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": "invalid_request", "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


# --- the machine endpoints' lean path ---------------------------------------------------------------------------------

# Endpoints only machines call, with client credentials: no browser session, no logged-in user, no flash messages,
# and CSRF does not apply (a cross-site form cannot present a client's credentials; the views are csrf_exempt too).
# Exact paths, not a prefix: /oauth/authorize/ is a browser page that needs all of them.
MACHINE_ENDPOINT_PATHS = frozenset({"/oauth/token/", "/oauth/bc-authorize/"})


class _NotForMachineEndpoints(MiddlewareMixin):
    """Mixed in before a browser-only middleware: skipped on MACHINE_ENDPOINT_PATHS. An agent polls the token
    endpoint every few seconds, and those middlewares built a session store, a message store and a lazy user per poll
    for nothing. Subclasses, so that Django's checks (admin.E408-E410) still see the middleware they require. Every
    other middleware (host validation, NUL refusal, security headers, CSP, no-store) still runs on every path."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in MACHINE_ENDPOINT_PATHS:
            response: HttpResponse = self.get_response(request)
            return response
        return super().__call__(request)  # type: ignore[no-any-return]


class SessionMiddleware(_NotForMachineEndpoints, session_middleware.SessionMiddleware):
    pass


class CsrfViewMiddleware(_NotForMachineEndpoints, csrf.CsrfViewMiddleware):
    def process_view(
        self, request: HttpRequest, callback: Callable[..., Any], callback_args: Any, callback_kwargs: Any
    ) -> HttpResponse | None:
        if request.path_info in MACHINE_ENDPOINT_PATHS:
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(_NotForMachineEndpoints, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(_NotForMachineEndpoints, messages_middleware.MessageMiddleware):
    pass


# django-csp attributes by which a view or decorator changes the policy of one response.
_CSP_RESPONSE_OVERRIDES = tuple(
    f"_csp_{kind}{suffix}" for kind in ("config", "update", "replace") for suffix in ("", "_ro")
)


class CSPMiddleware(csp_middleware.CSPMiddleware):
    """django-csp's middleware, with the policy built once per process rather than on every response (it was a sixth
    of a token poll's CPU): no response here changes the policy or uses a nonce, and those that would still get it
    built for them. Same headers, same exemptions (settings.DEBUG's error pages, _csp_exempt, EXCLUDE_URL_PREFIXES)."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if getattr(request, "_csp_nonce", None) is not None or any(
            getattr(response, name, None) is not None for name in _CSP_RESPONSE_OVERRIDES
        ):
            return super().process_response(request, response)
        if response.status_code in (500, 404) and settings.DEBUG:
            return response
        for header, exempt, (policy, excluded) in zip(
            (csp_constants.HEADER, csp_constants.HEADER_REPORT_ONLY),
            ("_csp_exempt", "_csp_exempt_ro"),
            _process_policies(),
            strict=True,
        ):
            if (
                policy
                and header not in response
                and getattr(response, exempt, False) is False
                and not request.path_info.startswith(excluded)
            ):
                response[header] = policy
        # As django-csp does: a nonce asked for after the header is written would not be in it.
        request.csp_nonce = csp_middleware.CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response


@cache
def _process_policies() -> tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]]:
    """(policy, excluded path prefixes) for the enforced and the report-only header, from settings."""
    enforced = getattr(settings, "CONTENT_SECURITY_POLICY", None) or {}
    report_only = getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None) or {}
    return (
        (csp_utils.build_policy(), tuple(enforced.get("EXCLUDE_URL_PREFIXES", None) or ())),
        (csp_utils.build_policy(report_only=True), tuple(report_only.get("EXCLUDE_URL_PREFIXES", None) or ())),
    )


@receiver(setting_changed)
def _forget_policies(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        _process_policies.cache_clear()
