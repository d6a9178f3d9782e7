"""A fake agent endpoint on 127.0.0.1: the client notification endpoint of a ping or push client (CIBA Core §10).

It records every request, whatever its method or path, and answers with scripted modes (``respond_with``).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes._server import LoopbackHandler, LoopbackServer

MODES = (
    "no_content",
    "ok_body",
    "redirect",
    "unauthorized",
    "forbidden",
    "server_error",
    "rate_limited",
    "hang",
    "huge",
)
DEFAULT_MODE = "no_content"
REDIRECT_PATH = "/moved"
HUGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    received_at: float


class FakeAgentEndpoint(LoopbackServer):
    """Answers any request on ``.url`` (or any other path) with the next scripted mode, then ``no_content``."""

    MODES = MODES
    DEFAULT_MODE = DEFAULT_MODE
    LISTS = ("received",)

    def __init__(self, hang_seconds: float = 10) -> None:
        super().__init__(_Handler, hang_seconds)

    @property
    def url(self) -> str:
        return f"{self.base_url}/cb"

    @property
    def received(self) -> list[Received]:
        """Snapshot of every request so far, in arrival order."""
        return self._snapshot("received")

    def wait_for(self, n: int, timeout: float = 10) -> list[Received]:
        """Block until at least ``n`` requests arrived; AssertionError with what arrived otherwise."""
        return self._wait_for("received", n, timeout, "requests")


_STATUS = {
    "unauthorized": (401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}),
    "forbidden": (403, {"error": "forbidden"}, {}),
    "server_error": (500, {"error": "server_error"}, {}),
    "rate_limited": (429, {"error": "rate_limited"}, {"Retry-After": "1"}),
}


class _Handler(LoopbackHandler):
    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake: FakeAgentEndpoint = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        fake._record(
            "received",
            Received(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                json=parsed,
                received_at=time.time(),
            ),
        )
        mode = fake._next_mode()
        if mode == "no_content":
            self._send(204, b"")
        elif mode == "ok_body":
            self._json(200, {"ok": True})
        elif mode == "redirect":
            self._json(301, {"moved": REDIRECT_PATH}, {"Location": f"{fake.base_url}{REDIRECT_PATH}"})
        elif mode == "hang":
            if fake._hang():
                return  # closed while hanging: drop the connection without an answer
            self._send(204, b"")
        elif mode == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()  # no Content-Length: the body ends when the connection closes, so only a cap stops it
            with contextlib.suppress(ConnectionError):  # the client stops reading at its cap
                self.wfile.write(b"x" * HUGE_BYTES)
        else:
            status, payload, headers = _STATUS[mode]
            self._json(status, payload, headers)

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"}, headers)
