"""A fake Twilio Messages API on 127.0.0.1 for the real ``twilio`` client.

Point the client at it with a ``TwilioHttpClient`` subclass that rewrites the host (see ``LoopbackTwilioHttpClient``).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

from tests.fakes._server import LoopbackHandler, LoopbackServer

MODES = ("ok", "invalid_number", "unsubscribed", "server_error", "rate_limited", "hang")
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account_sid>AC[0-9a-fA-F]{32})/Messages\.json$")
_GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = "^{}\\[~]|€\f"


@dataclass(frozen=True)
class ReceivedSms:
    """One request as the fake saw it."""

    path: str
    account_sid: str
    authorization: str | None
    form: dict[str, str]
    received_at: float

    @property
    def to(self) -> str | None:
        return self.form.get("To")

    @property
    def body(self) -> str | None:
        return self.form.get("Body")


@dataclass(frozen=True)
class SmsAttempt:
    """A request that passed auth, with the mode it was answered with."""

    sms: ReceivedSms
    mode: str
    status: int
    sid: str | None = None


@dataclass(frozen=True)
class RejectedSms:
    """A request refused before any mode applied (bad auth, unknown path, missing fields)."""

    sms: ReceivedSms
    status: int
    code: int
    reason: str


def segments(body: str) -> int:
    """Segment count as Twilio bills it: GSM-7 (160/153) or else UCS-2 (70/67, in UTF-16 units)."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in body):
        units, single, multi = sum(2 if c in _GSM7_EXT else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    if units <= single:
        return 1
    return -(-units // multi)


class FakeTwilio(LoopbackServer):
    """Fake ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with Basic auth and scripted failures."""

    MODES = MODES
    LISTS = ("messages", "attempts", "rejected")

    def __init__(
        self, account_sid: str = "AC" + "a" * 32, auth_token: str = "test-auth-token", hang_seconds: float = 10
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        super().__init__(_Handler, hang_seconds)

    def http_client(self, **kwargs: Any) -> LoopbackTwilioHttpClient:
        """A ``TwilioHttpClient`` that sends every request to this fake."""
        return LoopbackTwilioHttpClient(self.base_url, **kwargs)

    @property
    def messages(self) -> list[ReceivedSms]:
        """Snapshot of the messages answered with 201."""
        return self._snapshot("messages")

    @property
    def attempts(self) -> list[SmsAttempt]:
        """Snapshot of every request that passed auth."""
        return self._snapshot("attempts")

    @property
    def rejected(self) -> list[RejectedSms]:
        return self._snapshot("rejected")

    def wait_for_messages(self, n: int, timeout: float = 10) -> list[ReceivedSms]:
        """Block until at least ``n`` messages were accepted; AssertionError with what arrived otherwise."""
        return self._wait_for("messages", n, timeout, "SMS", also=("attempts", "rejected"))

    def wait_for_attempts(self, n: int, timeout: float = 10) -> list[SmsAttempt]:
        """Like ``wait_for_messages`` but counts every authenticated request, whatever it was answered with."""
        return self._wait_for("attempts", n, timeout, "attempts")

    # Called from handler threads.

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(password, self.auth_token)


class LoopbackTwilioHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that rewrites ``https://*.twilio.com`` to ``base_url`` (the documented extension point)."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urllib.parse.urlsplit(base_url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urllib.parse.urlsplit(url)._replace(scheme=self._base.scheme, netloc=self._base.netloc)
        return super().request(method, parts.geturl(), *args, **kwargs)


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(LoopbackHandler):
    def do_POST(self) -> None:
        fake: FakeTwilio = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        match = _PATH.match(urllib.parse.urlsplit(self.path).path)
        sms = ReceivedSms(
            path=self.path,
            account_sid=match["account_sid"] if match else "",
            authorization=self.headers.get("Authorization"),
            form=dict(urllib.parse.parse_qsl(raw, keep_blank_values=True)),
            received_at=time.time(),
        )
        if not fake._authorized(sms.authorization):
            fake._record("rejected", RejectedSms(sms, 401, 20003, "authentication failed"))
            self._json(401, _error(20003, "Authenticate", 401), {"WWW-Authenticate": 'Basic realm="Twilio API"'})
            return
        if not match:
            fake._record("rejected", RejectedSms(sms, 404, 20404, "unknown resource"))
            self._json(404, _error(20404, f"The requested resource {self.path} was not found", 404))
            return
        invalid = self._validate(sms.form)
        if invalid:
            code, message = invalid
            fake._record("rejected", RejectedSms(sms, 400, code, message))
            self._json(400, _error(code, message, 400))
            return

        mode = fake._next_mode()
        if mode == "hang":
            # Recorded before hanging so a test can wait for it; status 0 = no answer (yet).
            fake._record("attempts", SmsAttempt(sms, mode, 0))
            if fake._hang():
                return  # closed while hanging: drop the connection without an answer
            # A late answer still means the SMS went out, as with the real API.
            payload = self._message(sms)
            fake._record("messages", sms)
            self._json(201, payload)
            return
        if mode == "ok":
            payload = self._message(sms)
            fake._record("attempts", SmsAttempt(sms, mode, 201, payload["sid"]))
            fake._record("messages", sms)
            self._json(201, payload)
            return
        status, body, headers = self._failure(mode, sms.form.get("To", ""))
        fake._record("attempts", SmsAttempt(sms, mode, status))
        self._json(status, body, headers)

    def do_GET(self) -> None:
        self._json(405, _error(20004, "Method not allowed", 405))

    @staticmethod
    def _validate(form: dict[str, str]) -> tuple[int, str] | None:
        if not form.get("To"):
            return 21604, "A 'To' phone number is required."
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return 21603, "A 'From' phone number is required."
        if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
            return 21602, "Message body is required."
        return None

    @staticmethod
    def _failure(mode: str, to: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        if mode == "invalid_number":
            return 400, _error(21211, f"The 'To' number {to} is not a valid phone number.", 400), {}
        if mode == "unsubscribed":
            return 400, _error(21610, "Attempt to send to unsubscribed recipient", 400), {}
        if mode == "server_error":
            return 500, _error(20500, "An internal server error has occurred", 500), {}
        if mode == "rate_limited":
            return 429, _error(20429, "Too Many Requests", 429), {"Retry-After": "1"}
        raise AssertionError(f"unhandled mode {mode}")

    def _message(self, sms: ReceivedSms) -> dict[str, Any]:
        form, sid = sms.form, "SM" + secrets.token_hex(16)
        now = email.utils.format_datetime(datetime.fromtimestamp(sms.received_at, UTC))
        uri = f"/2010-04-01/Accounts/{sms.account_sid}/Messages/{sid}.json"
        service = form.get("MessagingServiceSid")
        return {
            "account_sid": sms.account_sid,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": None if service and not form.get("From") else form.get("From"),
            "messaging_service_sid": service,
            "num_media": "1" if form.get("MediaUrl") else "0",
            "num_segments": str(segments(form.get("Body", ""))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form["To"],
            "uri": uri,
        }

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"}, headers)
