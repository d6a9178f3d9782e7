"""Shared scaffolding of the loopback fakes: a stdlib HTTP server on 127.0.0.1:0 in a daemon thread.

A fake subclasses ``LoopbackServer`` (naming its ``MODES``, ``DEFAULT_MODE`` and recorded ``LISTS``) and serves requests
with a ``LoopbackHandler`` subclass, which reaches the fake as ``self.server.fake``.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class LoopbackServer:
    """Port, context manager, ``close()``, scripted modes, thread-safe recorded lists and the hang Event."""

    MODES: tuple[str, ...] = ()
    DEFAULT_MODE = "ok"
    LISTS: tuple[str, ...] = ()

    def __init__(self, handler: type[LoopbackHandler], hang_seconds: float = 10) -> None:
        self.hang_seconds = hang_seconds
        self._lists: dict[str, list[Any]] = {name: [] for name in self.LISTS}
        self._modes: deque[str] = deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop serving; hanging requests are released at once (their connections are dropped)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def respond_with(self, *modes: str) -> None:
        """Answer the next requests (one mode each) with these modes, then with ``DEFAULT_MODE`` again."""
        unknown = [m for m in modes if m not in self.MODES]
        if unknown:
            raise ValueError(f"unknown mode(s) {unknown}; known: {self.MODES}")
        with self._cond:
            self._modes.extend(modes)

    def _snapshot(self, name: str) -> list[Any]:
        """A copy of the recorded list ``name``."""
        with self._cond:
            return list(self._lists[name])

    def _wait_for(self, name: str, n: int, timeout: float, noun: str, also: tuple[str, ...] = ()) -> list[Any]:
        """Block until list ``name`` holds ``n`` items; AssertionError with it (and the ``also`` lists) otherwise."""
        with self._cond:
            items = self._lists[name]
            if not self._cond.wait_for(lambda: len(items) >= n, timeout):
                if also:
                    others = " ".join(f"{other}={self._lists[other]}" for other in also)
                    got = f"{len(items)}: {items}; {others}"
                else:
                    got = f"{items}"
                raise AssertionError(f"expected {n} {noun} within {timeout}s, got {got}")
            return list(items)

    # Called from handler threads.

    def _record(self, name: str, item: Any) -> None:
        with self._cond:
            self._lists[name].append(item)
            self._cond.notify_all()

    def _next_mode(self) -> str:
        with self._cond:
            return self._modes.popleft() if self._modes else self.DEFAULT_MODE

    def _hang(self) -> bool:
        """Hold a request for ``hang_seconds``; True when the fake was closed meanwhile (then drop the connection)."""
        return self._closing.wait(self.hang_seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # close() must not wait for handler threads (a hanging one, or one stuck reading a slow client).
    block_on_close = False
    fake: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and went away is expected here, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackHandler(BaseHTTPRequestHandler):
    """Quiet request handler with a helper to send a complete answer."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, out: bytes, head: dict[str, str] | None = None, extra: dict[str, str] | None = None
    ) -> None:
        """Send ``head`` headers, Content-Length, ``extra`` headers, then the body ``out``."""
        self.send_response(status)
        for name, value in (head or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(out)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(out)
