"""What every part of the benchmark shares: its paths, the one address it targets, its error, its log and a few
small helpers."""

from __future__ import annotations

import base64
import http.client
import math
import socket
import time
from pathlib import Path
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
OUT_DIR = BENCH_DIR / "out"
HOST = "127.0.0.1"  # the only address this benchmark ever targets
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
POLL_INTERVAL_S = 5  # the server's default interval: an id polled again sooner gets slow_down


class BenchError(Exception):
    """A failure with a message meant for the person running the benchmark."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_request(
    port: int, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def basic_auth(client: dict[str, str]) -> str:
    """The Authorization header of a client that create_agent_client printed (client_secret_basic)."""
    credentials = f"{quote_plus(client['client_id'])}:{quote_plus(client['client_secret'])}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def form_headers(auth: str) -> dict[str, str]:
    return {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
