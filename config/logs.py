"""Credentials never reach a log line, whatever logger, level or handler wrote it.

Django calls `configure` (settings.LOGGING_CONFIG) at setup in every process that loads Countersign: runserver,
gunicorn's workers, Celery; config/gunicorn.conf.py installs the same factory in gunicorn's master. Besides applying
settings.LOGGING it installs a log record factory, so every record of every logger (ours, runserver's access log
`django.server`, gunicorn's access log, DOT's, oauthlib's) is redacted as it is made, before any handler, filter or
formatter sees it. `redact` is the one policy:

- `name=value` (form bodies, query strings), `"name": "value"` (JSON) and `'name': 'value'` (Python reprs) for
  every credential-bearing parameter name: client secrets and assertions, access/refresh/ID/subject/actor tokens,
  auth_req_id, client_notification_token, registration and initial access tokens, user codes, passwords,
  the automated-approval `secret`;
- the credential of an Authorization header (`Bearer …`, `Basic …`);
- the token of an approval link, a path segment (`/approvals/l/<token>/`);
- an auth_req_id searched for in the admin's request list (`q=<auth_req_id>`);
- JWTs anywhere (ID tokens, JWT access tokens, client assertions);
- a token-shaped value right after the word naming it ("refresh token X", as oauthlib's DEBUG lines say).
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

REDACTED = "[redacted]"

# Parameter names whose values are credentials: anything ending in token, secret, password or assertion
# (access_token, client_secret, client_notification_token, csrfmiddlewaretoken, ...) and a few more.
_NAME = (
    r"(?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|assertion)"
    r"|auth_req_id|user_code|code|code_verifier|device_code)"
)
_FORM = re.compile(rf"(?i)(?<![A-Za-z0-9_.-])({_NAME})=([^&\s\"'<>;,)\]}}]+)")
_QUOTED = re.compile(rf"""(?i)(["'])({_NAME})\1(\s*:\s*)(["'])((?:\\.|(?!\4).)*)\4""")
# RFC 7617 / RFC 6750 credentials; sixteen characters at least, so that prose ("Basic credentials", `Bearer
# realm="…"`) stays readable. Every credential this server issues or accepts is longer.
_AUTHORIZATION = re.compile(r"\b(Bearer|Basic|DPoP)(\s+)[A-Za-z0-9._~+/=-]{16,}")
# The admin's request search takes an exact auth_req_id (issue 18; approvals.review), in the query string of a GET:
# `q=` followed by one (43 URL-safe characters, approvals.services.generate_auth_req_id), spaces around it allowed.
# Other searches stay readable.
_SEARCHED_AUTH_REQ_ID = re.compile(r"(?<![A-Za-z0-9_.-])q=(?:\+|%20)*[A-Za-z0-9_-]{43}(?:\+|%20)*(?![A-Za-z0-9_%-])")
# URL path segments that are credentials themselves: the approval link (approvals/urls.py, "l/<token>/").
_PATH_SECRETS = re.compile(r"(/approvals/l/)[^/\s?#\"'<>]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# oauthlib logs some tokens bare at DEBUG ("Validating refresh token %s for client %r"); twenty characters at least,
# so that words ("refresh token request") stay.
_NAMED_VALUE = re.compile(
    r"(?i)\b((?:access|refresh|id|registration|subject|actor|bearer)?[ _]?token|secret|auth_req_id)(,?\s+['\"]?)"
    r"[A-Za-z0-9._~+/=-]{20,}"
)


# What each pattern above cannot match without: a cheap test that lets the common line (an access log line, a
# message naming no credential) skip the six substitutions, which cost a request ~40 us (issue 17). Kept a superset
# of the patterns: tests/security/test_logs.py checks that skipping never changes the result.
_WORD_BEFORE_VALUE = re.compile(r"(?:token|secret|auth_req_id),?\s")
_QUOTED_NAME_BEFORE_COLON = re.compile(r"[\"']\s*:")


def may_hold_credential(text: str) -> bool:
    """False when no pattern of `redact` can match `text`."""
    low = text.lower()
    if "=" in low or "eyj" in low or "bearer" in low or "basic" in low or "dpop" in low or "/approvals/l/" in low:
        return True  # _FORM, _JWT, _AUTHORIZATION, _PATH_SECRETS
    if ("token" in low or "secret" in low or "auth_req_id" in low) and _WORD_BEFORE_VALUE.search(low):
        return True  # _NAMED_VALUE
    return _QUOTED_NAME_BEFORE_COLON.search(text) is not None  # _QUOTED


def redact(text: str) -> str:
    """`text` with every credential this module knows how to recognise replaced by [redacted]."""
    if not may_hold_credential(text):
        return text
    return redact_all(text)


def redact_all(text: str) -> str:
    """`redact` without the cheap test first."""
    text = _JWT.sub(REDACTED, text)
    text = _QUOTED.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{REDACTED}{m[4]}", text)
    text = _FORM.sub(lambda m: f"{m[1]}={REDACTED}", text)
    text = _SEARCHED_AUTH_REQ_ID.sub(f"q={REDACTED}", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _PATH_SECRETS.sub(lambda m: f"{m[1]}{REDACTED}", text)
    return _NAMED_VALUE.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)


_traceback_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redacts the message (arguments merged in), the traceback text and the stack text of one record in place.

    A message that needs no redaction keeps its template and arguments (log aggregators group by them)."""
    try:
        message = record.getMessage()
    except Exception:  # a caller's bad format string: the handler reports it, with redacted arguments
        message = f"{record.msg} {record.args!r}"
    redacted = redact(message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when it is set, so the traceback is printed as redacted here.
        record.exc_text = redact(_traceback_formatter.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install_record_factory() -> None:
    """Makes every LogRecord of this process redacted at creation; idempotent."""
    current = logging.getLogRecordFactory()
    if getattr(current, "countersign_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    factory.countersign_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure(logging_settings: dict[str, Any] | None) -> None:
    """settings.LOGGING_CONFIG: the redacting record factory, then settings.LOGGING."""
    install_record_factory()
    if logging_settings:
        logging.config.dictConfig(logging_settings)
