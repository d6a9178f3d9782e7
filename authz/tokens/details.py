"""Rich Authorization Requests (RFC 9396) at the backchannel endpoint: `authorization_details` checked against the
registered types (authz.models.AuthorizationDetailType) and their JSON Schemas before a person is asked."""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from datetime import datetime
from typing import Any

from django.template import TemplateSyntaxError
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, UnknownType, best_match
from referencing.exceptions import Unresolvable

from approvals.display import compile_display_template
from approvals.text import MAX_COMBINING_MARKS, stacks_marks
from authz.clients.keys import jsonb_problem, strict_json_loads
from authz.errors import InvalidAuthorizationDetails
from authz.models import AuthorizationDetailType, CibaClient

logger = logging.getLogger(__name__)

# Bounds on what one request may ask a person to read and approve, and on the work validating it costs.
MAX_DETAILS = 10
MAX_JSON_BYTES = 8192
MAX_DEPTH = 8
# Every string and object key, before any schema sees it: jsonschema evaluates `pattern` even where `maxLength` has
# already failed, and an admin's pattern may backtrack (the calendar's attendee pattern spent 0.15 s on 8 KB of
# ".a"). 512 holds any name, title, e-mail address (254) or resource URL a person can read on an approval page.
MAX_STRING_CHARS = 512
# RFC 9396 §2.2: common fields whose shape holds for every type.
COMMON_STRING_ARRAYS = ("locations", "actions", "datatypes", "privileges")

# jsonschema checks date-time only with an optional package; RFC 3339 §5.6 is small enough to check here.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # JSON Schema: formats apply to strings only
    if not _RFC3339.fullmatch(value):
        return False
    # fromisoformat rejects impossible dates and times (2026-02-30, 25:00) by raising ValueError.
    datetime.fromisoformat(re.sub(r"\.\d+", "", value).replace("z", "Z").replace("t", "T"))
    return True


def parse_authorization_details(raw: str | list[Any] | None, *, ciba: CibaClient) -> list[dict[str, Any]]:
    """The validated authorization_details: a JSON string (a form parameter) or an already decoded list (a claim
    of a signed request object). [] when absent. Raises InvalidAuthorizationDetails (RFC 9396 §5)."""
    if raw is None:
        return []
    details = _decode(raw)
    if len(details) > MAX_DETAILS:
        raise InvalidAuthorizationDetails(f"authorization_details may hold at most {MAX_DETAILS} objects.")
    for index, detail in enumerate(details):
        if not isinstance(detail, dict):
            raise InvalidAuthorizationDetails(f"authorization_details[{index}] is not a JSON object.")
        if not isinstance(detail.get("type"), str) or not detail["type"]:
            raise InvalidAuthorizationDetails(
                f"authorization_details[{index}] needs a string type (RFC 9396 section 2)."
            )
        _check_strings(detail, index=index, depth=0)
        _check_common_fields(detail, index=index)
    types = {
        t.type: t for t in AuthorizationDetailType.objects.filter(enabled=True, type__in={d["type"] for d in details})
    }
    allowed = [t for t in (ciba.authorization_details_types or []) if isinstance(t, str)]
    for index, detail in enumerate(details):
        kind = types.get(detail["type"])
        if kind is None:
            raise InvalidAuthorizationDetails(
                f"authorization_details[{index}]: unknown type '{detail['type'][:60]}'.",
            )
        if allowed and kind.type not in allowed:
            raise InvalidAuthorizationDetails(
                f"authorization_details[{index}]: this client may not use type '{kind.type}'.",
            )
        _check_schema(detail, kind=kind, index=index)
    return details


def enabled_type_names() -> list[str]:
    """RFC 9396 §10: authorization_details_types_supported in the server's metadata."""
    return list(AuthorizationDetailType.objects.filter(enabled=True).order_by("type").values_list("type", flat=True))


def _decode(raw: str | list[Any]) -> list[Any]:
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > MAX_JSON_BYTES:
            raise InvalidAuthorizationDetails(f"authorization_details is larger than {MAX_JSON_BYTES} bytes.")
        try:
            # NaN and Infinity are not JSON (RFC 8259 §6) and could not be stored in PostgreSQL's jsonb.
            value = strict_json_loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidAuthorizationDetails("authorization_details is not valid JSON.") from exc
    else:
        value = raw
        try:
            size = len(json.dumps(value, allow_nan=False).encode("utf-8"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidAuthorizationDetails("authorization_details is not valid JSON.") from exc
        if size > MAX_JSON_BYTES:
            raise InvalidAuthorizationDetails(f"authorization_details is larger than {MAX_JSON_BYTES} bytes.")
    if not isinstance(value, list):
        raise InvalidAuthorizationDetails("authorization_details must be a JSON array of objects (RFC 9396 section 2).")
    return value


def _check_strings(value: Any, *, index: int, depth: int) -> None:
    """Bounded nesting and string lengths, and no control or invisible formatting characters anywhere: what a person
    approves must read the same on every screen (a bidi override could turn "EUR 10" into something else)."""
    if depth > MAX_DEPTH:
        raise InvalidAuthorizationDetails(f"authorization_details[{index}] is nested too deeply.")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, index=index)
            _check_strings(item, index=index, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, index=index, depth=depth + 1)
    elif isinstance(value, str):
        _check_text(value, index=index)


def _check_text(text: str, *, index: int) -> None:
    if len(text) > MAX_STRING_CHARS:
        raise InvalidAuthorizationDetails(
            f"authorization_details[{index}] has a string longer than {MAX_STRING_CHARS} characters."
        )
    problem = text_problem(text)
    if problem:
        raise InvalidAuthorizationDetails(f"authorization_details[{index}] {problem}.")


def text_problem(text: str) -> str:
    """Why this text could read differently on the approval page than it is, or "". No control, format (bidi),
    private-use or unassigned characters; no space but U+0020 (an em space or a row of no-break spaces pads a value
    to push what follows out of sight); no run of more than MAX_COMBINING_MARKS combining marks on one letter
    ("Zalgo" text spills over the lines above and below). Mixed scripts are flagged on the page, not refused
    (approvals.display): they are legitimate in many names."""
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return f"contains a control or formatting character (U+{ord(char):04X})"
        if category == "Zs" and char != " ":
            return f"contains a space other than U+0020 (U+{ord(char):04X})"
    if stacks_marks(text):
        return f"stacks more than {MAX_COMBINING_MARKS} combining marks on one letter"
    return ""


def _check_common_fields(detail: dict[str, Any], *, index: int) -> None:
    # RFC 9396 §2.2: locations, actions, datatypes and privileges are arrays of strings; identifier is a string.
    for field in COMMON_STRING_ARRAYS:
        if field in detail:
            value = detail[field]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise InvalidAuthorizationDetails(
                    f"authorization_details[{index}].{field} must be an array of strings.",
                )
    if "identifier" in detail and not isinstance(detail["identifier"], str):
        raise InvalidAuthorizationDetails(f"authorization_details[{index}].identifier must be a string.")


def _check_schema(detail: dict[str, Any], *, kind: AuthorizationDetailType, index: int) -> None:
    validator = Draft202012Validator(kind.schema, format_checker=FORMAT_CHECKER)
    try:
        error = best_match(validator.iter_errors(detail))
    except (SchemaError, Unresolvable, UnknownType, re.error):
        # The admin checks schemas on save (authz.admin); one changed elsewhere must still fail as a client error.
        logger.exception("The JSON Schema of authorization details type %s is unusable", kind.type)
        raise InvalidAuthorizationDetails(
            f"authorization_details[{index}]: type '{kind.type}' cannot be validated at present."
        ) from None
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(the object)"
        raise InvalidAuthorizationDetails(
            f"authorization_details[{index}] is not a valid {kind.type}: {where}: {error.message[:200]}"
        )


# --- checks for the admin (authz.admin) -------------------------------------------------------------------------------

_TYPE_NAME = re.compile(r"[\x21-\x7e]{1,255}")


def type_name_errors(name: str) -> list[str]:
    if not _TYPE_NAME.fullmatch(name or ""):
        return ["Use printable ASCII without spaces, e.g. payment_initiation or a URI."]
    return []


def schema_errors(schema: Any, *, type_name: str = "") -> list[str]:
    """Why this is not a usable JSON Schema (2020-12) for a type, or []."""
    if not isinstance(schema, dict):
        return ["The schema must be a JSON object."]
    problem = jsonb_problem(schema)
    if problem:
        return [f"The schema {problem}."]
    try:
        Draft202012Validator.check_schema(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top level)"
        return [f"Not a valid JSON Schema at {where}: {exc.message[:300]}"]
    try:
        # A trial run finds references that cannot be resolved: schemas are never fetched from elsewhere.
        list(Draft202012Validator(schema, format_checker=FORMAT_CHECKER).iter_errors({"type": type_name}))
    except (Unresolvable, UnknownType, re.error) as exc:
        return [f"The schema cannot be used: {str(exc)[:300]}"]
    return []


def template_errors(source: str) -> list[str]:
    """Why this display template does not compile in the restricted engine the approval page renders it with
    (approvals.display: no load, only a small set of tags and filters), or []."""
    try:
        compile_display_template(source)
    except TemplateSyntaxError as exc:
        return [f"The template does not compile: {exc}"]
    return []
