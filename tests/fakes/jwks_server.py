"""A fake client JWKS endpoint on 127.0.0.1: the jwks_uri of a private_key_jwt client (RFC 7591 §2, RFC 7517 §5).

It serves whatever key set the test last gave it (``serve``), so a test can rotate the client's keys, records every
fetch, and can answer with scripted failures (``respond_with``). Mode ``hold`` keeps a fetch waiting until the test
calls ``release()`` (then it is served the key set), so a test can see what other requests do meanwhile.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tests.fakes._server import LoopbackHandler, LoopbackServer

MODES = ("ok", "server_error", "not_json", "hold")


class FakeJwksServer(LoopbackServer):
    """Serves ``.jwks`` as JSON at ``.url``; ``fetches`` lists the path of every request."""

    MODES = MODES
    DEFAULT_MODE = "ok"
    LISTS = ("fetches",)

    def __init__(self, jwks: dict[str, Any] | None = None, hang_seconds: float = 10) -> None:
        self._jwks_lock = threading.Lock()
        self._jwks: dict[str, Any] = jwks or {"keys": []}
        self._released = threading.Event()
        super().__init__(_Handler, hang_seconds=hang_seconds)

    @property
    def url(self) -> str:
        return f"{self.base_url}/jwks"

    def serve(self, jwks: dict[str, Any]) -> None:
        """Serve this key set from now on (a client rotating its keys)."""
        with self._jwks_lock:
            self._jwks = jwks

    @property
    def jwks(self) -> dict[str, Any]:
        with self._jwks_lock:
            return self._jwks

    @property
    def fetches(self) -> list[str]:
        return self._snapshot("fetches")

    def wait_for_fetches(self, n: int, timeout: float = 10) -> list[str]:
        """Block until ``n`` fetches have arrived (held ones included)."""
        return self._wait_for("fetches", n, timeout, "fetches")

    def release(self) -> None:
        """Answer the held fetches (and any later ``hold``) with the key set."""
        self._released.set()

    @property
    def holding(self) -> bool:
        return not self._released.is_set()

    def _wait_released(self) -> bool:
        """Wait for ``release()``; False when the fake was closed (or hang_seconds passed) first."""
        deadline = time.monotonic() + self.hang_seconds
        while not self._closing.is_set() and time.monotonic() < deadline:
            if self._released.wait(0.05):
                return True
        return False


class _Handler(LoopbackHandler):
    def do_GET(self) -> None:
        fake: FakeJwksServer = self.server.fake
        fake._record("fetches", self.path)
        mode = fake._next_mode()
        if mode == "hold" and not fake._wait_released():
            return  # closed while held: drop the connection
        if mode == "server_error":
            self._send(500, b'{"error": "server_error"}', {"Content-Type": "application/json"})
        elif mode == "not_json":
            self._send(200, b"<html>not a key set</html>", {"Content-Type": "text/html"})
        else:
            self._send(200, json.dumps(fake.jwks).encode(), {"Content-Type": "application/jwk-set+json"})
