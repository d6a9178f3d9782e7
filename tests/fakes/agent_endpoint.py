"""A fake agent endpoint on 127.0.0.1: the client notification endpoint of a ping or push client (CIBA Core §10).

It records every request, whatever its method or path, and answers with scripted modes (``respond_with``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

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


class FakeAgentEndpoint:
    """Answers any request on ``.url`` (or any other path) with the next scripted mode, then ``no_content``."""

    def __init__(self, hang_seconds: float = 10) -> None:
        self.hang_seconds = hang_seconds
        self._received: list[Received] = []
        self._modes: deque[str] = deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/cb"

    def close(self) -> None:
        """Stop serving; hanging requests are released at once (their connections are dropped)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeAgentEndpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def respond_with(self, *modes: str) -> None:
        """Answer the next requests (one mode each) with these modes, then with "no_content" again."""
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown mode(s) {unknown}; known: {MODES}")
        with self._cond:
            self._modes.extend(modes)

    @property
    def received(self) -> list[Received]:
        """Snapshot of every request so far, in arrival order."""
        with self._cond:
            return list(self._received)

    def wait_for(self, n: int, timeout: float = 10) -> list[Received]:
        """Block until at least ``n`` requests arrived; AssertionError with what arrived otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._received) >= n, timeout):
                raise AssertionError(f"expected {n} requests within {timeout}s, got {self._received}")
            return list(self._received)

    # Called from handler threads.

    def _record(self, item: Received) -> None:
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()

    def _next_mode(self) -> str:
        with self._cond:
            return self._modes.popleft() if self._modes else DEFAULT_MODE


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # close() must not wait for handler threads (a hanging one, or one stuck reading a slow client).
    block_on_close = False
    fake: FakeAgentEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and went away is expected here, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


_STATUS = {
    "unauthorized": (401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}),
    "forbidden": (403, {"error": "forbidden"}, {}),
    "server_error": (500, {"error": "server_error"}, {}),
    "rate_limited": (429, {"error": "rate_limited"}, {"Retry-After": "1"}),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        fake._record(
            Received(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                json=parsed,
                received_at=time.time(),
            )
        )
        mode = fake._next_mode()
        if mode == "no_content":
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "ok_body":
            self._json(200, {"ok": True})
        elif mode == "redirect":
            self._json(301, {"moved": REDIRECT_PATH}, {"Location": f"{fake.base_url}{REDIRECT_PATH}"})
        elif mode == "hang":
            if fake._closing.wait(fake.hang_seconds):
                return  # closed while hanging: drop the connection without an answer
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
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
        out = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(out)
