"""config.logs.redact skips its substitutions when no pattern can match, and config.access_log.AccessLogger writes
the lines gunicorn's own logger writes (issue 17: both made the access log cheap, neither may change a line)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from config.access_log import AccessLogger
from config.logs import REDACTED, may_hold_credential, redact, redact_all

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
SECRET = "Zq3vN8xW1pL6tR0yB4mK7cD2"

CREDENTIAL_LINES = [
    f"client_secret={SECRET}",
    f"POST /oauth/token/?access_token={SECRET} HTTP/1.1",
    f'{{"refresh_token": "{SECRET}"}}',
    f"{{'auth_req_id' : '{SECRET}'}}",
    f"Authorization: Bearer {SECRET}",
    f"Authorization: Basic {SECRET}",
    f"DPoP {SECRET}",
    f"GET /approvals/l/{SECRET}/ HTTP/1.1",
    f"id_token {JWT}",
    JWT,
    f"Validating refresh token {SECRET} for client",
    f"Validating Refresh Token, '{SECRET}'",
    f"auth_req_id\t{SECRET}",
    f"secret {SECRET}",
]

PLAIN_LINES = [
    '127.0.0.1 - bench-agent [06/Dec/2026:04:01:05 +0000] "POST /oauth/token/ HTTP/1.1" 400 112 "wrk" 0.003412',
    '127.0.0.1 - - [06/Dec/2026:04:01:05 +0000] "POST /oauth/bc-authorize/ HTTP/1.1" 200 98 "-" 0.011',
    "Prompt sent for request 42 through twilio_sms",
    "Prompt queued for request 17",
]


@pytest.mark.parametrize("line", CREDENTIAL_LINES)
def test_lines_with_a_credential_take_the_full_path(line: str) -> None:
    assert may_hold_credential(line)
    assert SECRET not in redact(line) and JWT not in redact(line)
    assert REDACTED in redact(line)


@pytest.mark.parametrize("line", PLAIN_LINES)
def test_plain_lines_skip_the_substitutions_unchanged(line: str) -> None:
    assert not may_hold_credential(line)
    assert redact(line) == redact_all(line) == line


# Pieces the patterns look for, mixed with arbitrary text: whatever the mix, the cheap test may only skip lines that
# the substitutions would leave as they are.
PIECES = st.sampled_from(
    [
        "token",
        "Token",
        "TOKEN",
        "secret",
        "auth_req_id",
        "access_token",
        "refresh token",
        "client_secret",
        "password",
        "code",
        "user_code",
        "=",
        ":",
        " : ",
        '"',
        "'",
        ",",
        " ",
        "\t",
        "\n",
        "Bearer",
        "Basic",
        "DPoP",
        "bearer",
        "eyJ",
        "eyj",
        "/approvals/l/",
        "/APPROVALS/L/",
        ".",
        "/",
        SECRET,
        SECRET[:16],
        "abc",
        "é",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=14).map("".join))
def test_the_cheap_test_never_changes_a_result(text: str) -> None:
    assert redact(text) == redact_all(text)


class _Response:
    status = "400 Bad Request"
    sent = 112
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


class _Request:
    headers = [("HOST", "127.0.0.1:8000"), ("USER-AGENT", "wrk"), ("AUTHORIZATION", "Basic Ym9iOnNlY3JldA==")]


ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/oauth/token/?x=1",
    "PATH_INFO": "/oauth/token/",
    "QUERY_STRING": "x=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_AUTHORIZATION": "Basic Ym9iOnNlY3JldA==",
    "HTTP_USER_AGENT": 'wrk "quoted"',
    "HTTP_REFERER": "https://example.com/",
}


def _line(logger_class: type[glogging.Logger], access_log_format: str) -> str:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    cfg.set("accesslog", "-")
    logger = logger_class(cfg)
    logger.now = lambda: "[06/Dec/2026:04:01:05 +0000]"  # type: ignore[method-assign]
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.access_log.handlers = [Keep()]
    logger.access_log.propagate = False
    logger.access_log.setLevel(logging.INFO)
    logger.access(_Response(), _Request(), ENVIRON, dt.timedelta(seconds=1, microseconds=2345))
    return lines[0]


@pytest.mark.parametrize(
    "access_log_format",
    [
        '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(L)s',  # config/gunicorn.conf.py's
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',  # gunicorn's default
        "%(q)s %(B)s %(T)s %(D)s %(M)s %(p)s %(x)s",  # the rest, and an unknown atom ("-")
        '%(s)s "%({user-agent}i)s" "%({content-type}o)s" "%({path_info}e)s"',  # headers: gunicorn's own atoms
    ],
)
def test_the_access_logger_writes_gunicorns_lines(access_log_format: str) -> None:
    assert _line(AccessLogger, access_log_format) == _line(glogging.Logger, access_log_format)


def test_gunicorn_conf_uses_it() -> None:
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[1] / "config" / "gunicorn.conf.py").read_text()
    assert 'logger_class = "config.access_log.AccessLogger"' in conf
