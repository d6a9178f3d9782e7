"""Request hygiene that every view relies on, so that no endpoint has to remember it."""

from __future__ import annotations

import io
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.files import uploadhandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParser, MultiPartParserError

NUL_DESCRIPTION = "Parameters, headers and paths must not contain NUL characters."
TOO_LARGE_DESCRIPTION = "The request body is too large."


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
        if any("\x00" in value for value in request.headers.values()):
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
