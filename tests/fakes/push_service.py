"""A fake Web Push service on 127.0.0.1 that checks VAPID and decrypts aes128gcm payloads like a browser would."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.fakes._server import LoopbackHandler, LoopbackServer

# trickle: a 201 whose body comes one byte every TRICKLE_SECONDS (each read is quick, the whole answer is not);
# huge: a 201 with a HUGE_BYTES body.
MODES = ("ok", "gone", "not_found", "server_error", "rate_limited", "hang", "trickle", "huge")
TRICKLE_SECONDS = 0.5
TRICKLE_BYTES = 12
HUGE_BYTES = 8 * 1024 * 1024
MAX_VAPID_LIFETIME = 24 * 60 * 60
_RECORDED_HEADERS = ("TTL", "Urgency", "Topic", "Content-Encoding")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class BrowserSubscription:
    """A push subscription as a browser creates it; keeps the private key so the fake can decrypt."""

    name: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    auth_secret: bytes = field(repr=False)

    @property
    def info(self) -> dict[str, Any]:
        """The ``PushSubscription.toJSON()`` shape that ``pywebpush.webpush`` takes as ``subscription_info``."""
        point = self.private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(point), "auth": b64url(self.auth_secret)}}


@dataclass(frozen=True)
class ReceivedPush:
    """A push that passed VAPID and decryption."""

    path: str
    endpoint: str
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    vapid_public_key: str
    payload: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class PushAttempt:
    """A push that passed all checks, with the mode it was answered with (status 0: hanging, no answer yet)."""

    push: ReceivedPush
    mode: str
    status: int


@dataclass(frozen=True)
class RejectedPush:
    """A request refused by the checks; ``reason`` says which one."""

    path: str
    status: int
    reason: str
    headers: dict[str, str]
    received_at: float


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FakePushService(LoopbackServer):
    """Fake push service: ``POST /push/<name>`` with VAPID (RFC 8292) and aes128gcm (RFC 8291) bodies."""

    MODES = MODES
    LISTS = ("pushes", "attempts", "rejected")

    def __init__(self, expected_vapid_public_key: str | None = None, hang_seconds: float = 10) -> None:
        self.expected_vapid_public_key = expected_vapid_public_key
        self._subscriptions: dict[str, BrowserSubscription] = {}
        super().__init__(_Handler, hang_seconds)

    def subscribe(self, name: str | None = None) -> BrowserSubscription:
        """Create a subscription (P-256 key pair + 16-byte auth secret) whose endpoint is on this fake."""
        name = name or secrets.token_urlsafe(16)
        sub = BrowserSubscription(
            name=name,
            endpoint=f"{self.base_url}/push/{name}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=secrets.token_bytes(16),
        )
        with self._cond:
            self._subscriptions[name] = sub
        return sub

    @property
    def pushes(self) -> list[ReceivedPush]:
        """Snapshot of the pushes answered with 201."""
        return self._snapshot("pushes")

    @property
    def attempts(self) -> list[PushAttempt]:
        """Snapshot of every push that passed the checks, whatever mode answered it."""
        return self._snapshot("attempts")

    @property
    def rejected(self) -> list[RejectedPush]:
        return self._snapshot("rejected")

    def wait_for_pushes(self, n: int, timeout: float = 10) -> list[ReceivedPush]:
        """Block until at least ``n`` pushes were accepted; AssertionError with what arrived otherwise."""
        return self._wait_for("pushes", n, timeout, "pushes", also=("attempts", "rejected"))

    def wait_for_attempts(self, n: int, timeout: float = 10) -> list[PushAttempt]:
        """Like ``wait_for_pushes`` but counts valid pushes whatever they were answered with."""
        return self._wait_for("attempts", n, timeout, "attempts")

    # Called from handler threads.

    def _subscription(self, name: str) -> BrowserSubscription | None:
        with self._cond:
            return self._subscriptions.get(name)

    def _verify_vapid(self, authorization: str | None) -> tuple[dict[str, Any], str]:
        """Return (claims, k) or raise _Rejected(401, why)."""
        if not authorization or not authorization.lower().startswith("vapid "):
            raise _Rejected(401, f"Authorization is not 'vapid t=...,k=...': {authorization!r}")
        params: dict[str, str] = {}
        for part in authorization.split(" ", 1)[1].split(","):
            key, sep, value = part.strip().partition("=")
            if sep:
                params[key.strip()] = value.strip()
        token, k = params.get("t"), params.get("k")
        if not token or not k:
            raise _Rejected(401, f"vapid Authorization lacks t= or k=: {authorization!r}")
        if self.expected_vapid_public_key is not None and k != self.expected_vapid_public_key.rstrip("="):
            raise _Rejected(401, f"VAPID key k={k} is not the expected {self.expected_vapid_public_key}")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(k))
        except (ValueError, binascii.Error) as exc:
            raise _Rejected(401, f"VAPID k is not a P-256 point: {exc}") from exc
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                audience=self.base_url,
                options={"require": ["aud", "exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise _Rejected(401, f"VAPID JWT invalid: {type(exc).__name__}: {exc}") from exc
        if claims["exp"] > time.time() + MAX_VAPID_LIFETIME:
            raise _Rejected(401, f"VAPID exp {claims['exp']} is more than 24 h ahead")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https://")):
            raise _Rejected(401, f"VAPID sub {sub!r} is neither mailto: nor https://")
        return claims, k


_FAILURES: dict[str, tuple[int, int, str]] = {
    # mode: (status, autopush errno, message)
    "gone": (410, 106, "Request did not validate: subscription expired"),
    "not_found": (404, 102, "Request did not validate: invalid token"),
    "server_error": (500, 999, "An unexpected server error occurred"),
    "rate_limited": (429, 999, "Too Many Requests"),
}


class _Handler(LoopbackHandler):
    def do_POST(self) -> None:
        fake: FakePushService = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received_at = time.time()
        try:
            push = self._check(body, received_at)
        except _Rejected as exc:
            headers = {name: value for name, value in self.headers.items()}
            fake._record("rejected", RejectedPush(self.path, exc.status, exc.reason, headers, received_at))
            self._reply(exc.status, {"code": exc.status, "error": "Rejected", "message": exc.reason})
            return

        mode = fake._next_mode()
        if mode == "hang":
            fake._record("attempts", PushAttempt(push, mode, 0))
            if fake._hang():
                return  # closed while hanging: drop the connection without an answer
            # A late answer still means the push was accepted.
            fake._record("pushes", push)
            self._reply(201, None)
            return
        if mode in ("trickle", "huge"):
            fake._record("attempts", PushAttempt(push, mode, 201))
            self._slow_or_huge_reply(fake, mode)
            return
        if mode == "ok":
            fake._record("attempts", PushAttempt(push, mode, 201))
            fake._record("pushes", push)
            self._reply(201, None)
            return
        status, errno, message = _FAILURES[mode]
        fake._record("attempts", PushAttempt(push, mode, status))
        extra = {"Retry-After": "1"} if mode == "rate_limited" else {}
        self._reply(
            status, {"code": status, "errno": errno, "error": self.responses[status][0], "message": message}, extra
        )

    def _slow_or_huge_reply(self, fake: FakePushService, mode: str) -> None:
        size = TRICKLE_BYTES if mode == "trickle" else HUGE_BYTES
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            if mode == "huge":
                chunk = b"x" * 65536
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
                return
            for _ in range(size):
                self.wfile.write(b"x")
                self.wfile.flush()
                if fake._closing.wait(TRICKLE_SECONDS):
                    return
        except OSError:
            return  # the client gave up: what a deadline or a size cap is for

    def _check(self, body: bytes, received_at: float) -> ReceivedPush:
        fake: FakePushService = self.server.fake
        path = urllib.parse.urlsplit(self.path).path
        prefix = "/push/"
        sub = fake._subscription(path[len(prefix) :]) if path.startswith(prefix) else None
        if sub is None:
            raise _Rejected(404, f"no subscription at {path}")
        claims, k = fake._verify_vapid(self.headers.get("Authorization"))
        encoding = self.headers.get("Content-Encoding")
        if encoding != "aes128gcm":
            raise _Rejected(400, f"Content-Encoding must be aes128gcm, got {encoding!r}")
        ttl = self.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            raise _Rejected(400, f"TTL header missing or not a non-negative integer: {ttl!r}")
        try:
            payload = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth_secret, version="aes128gcm"
            )
        except Exception as exc:  # http_ece raises ECEException, cryptography InvalidTag, struct/ValueError...
            raise _Rejected(400, f"payload does not decrypt: {type(exc).__name__}: {exc}") from exc
        headers = {name: self.headers[name] for name in _RECORDED_HEADERS if self.headers.get(name) is not None}
        return ReceivedPush(
            path=self.path,
            endpoint=sub.endpoint,
            headers=headers,
            vapid_claims=claims,
            vapid_public_key=k,
            payload=payload,
            received_at=received_at,
        )

    def _reply(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        out = json.dumps(body).encode() if body is not None else b""
        head = {}
        if status == 201:
            head["Location"] = f"{self.server.fake.base_url}/message/{secrets.token_urlsafe(12)}"
        if out:
            head["Content-Type"] = "application/json"
        self._send(status, out, head, headers)
