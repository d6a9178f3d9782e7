"""The one way Countersign calls a URL that a client chose (CIBA notification endpoints, later JWKS URLs).

Such a URL must not let a client reach what only the server can reach (SSRF). Every call:
- resolves the host and refuses any address that is not globally routable: private, loopback, link-local (cloud
  metadata at 169.254.169.254 included), multicast, carrier-grade NAT, reserved, unspecified, the other cloud
  metadata and platform addresses listed below, and IPv6 addresses that embed a refused IPv4 address (IPv4-mapped,
  6to4, NAT64, Teredo). 6to4 and Teredo addresses are refused even when they embed a public address: both are
  deprecated tunnels whose relay is not ours to choose, and no callback needs them. An IPv4-mapped or well-known-prefix
  NAT64 address (64:ff9b::/96, what DNS64 gives an IPv6-only server) is judged by the IPv4 address it reaches;
- connects only to the addresses it checked, never resolving again (no DNS rebinding between check and connect),
  trying them in the resolver's order until one accepts the connection, while TLS still verifies the certificate
  for the host name;
- follows no redirect, and caps the time (one deadline for the whole call, name resolution included, however slowly
  the resolver or the server answers) and the size of the answer.
`check_url` applies the same rules at registration. Development and tests may allow http to loopback only
(APPROVALS["OUTBOUND_ALLOW_LOOPBACK_HTTP"]; a system check refuses it with DEBUG off).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from approvals.conf import approvals_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix (RFC 6052): the IPv4 address is the low 32 bits
# Refused although Python's ipaddress (3.11) may call them global; reasons as shown to the client.
_REFUSED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("100.64.0.0/10", "carrier-grade NAT (Alibaba Cloud's metadata is 100.100.100.200)"),
        ("192.0.0.0/24", "reserved for IETF protocols (Oracle Cloud's legacy metadata is 192.0.0.192)"),
        ("192.88.99.0/24", "the deprecated 6to4 relay range"),
        ("168.63.129.16/32", "Azure's platform endpoint (WireServer)"),
        ("64:ff9b:1::/48", "a local-use NAT64 prefix"),
        ("2001::/32", "Teredo (a deprecated tunnel)"),
        ("2002::/16", "6to4 (a deprecated tunnel)"),
        ("3fff::/20", "reserved for documentation"),
        ("5f00::/16", "reserved for SRv6"),
        ("fec0::/10", "site-local (deprecated by RFC 3879, still routed inside some networks)"),
    )
)
# getaddrinfo has no timeout of its own (the system resolver may wait tens of seconds): each lookup runs in a daemon
# thread that the call waits for only until its deadline. A thread stuck in a hung lookup stays until the system
# resolver gives up, so at most this many lookups run at once per process; a call that finds none free waits for one
# within its deadline. Daemon threads, not a pool, so that a hung lookup never delays the process's exit.
MAX_CONCURRENT_LOOKUPS = 16
_lookup_slots = threading.BoundedSemaphore(MAX_CONCURRENT_LOOKUPS)
# Characters no URL we call may carry (http.client would refuse them only at call time, after registration passed).
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\]")


class OutboundError(Exception):
    """A call that did not happen or did not finish. `refused`: the URL or its address is not allowed."""

    def __init__(self, message: str, *, refused: bool = False, timeout: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.timeout = timeout


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: int
    address: str


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why a client-chosen URL must not reach this address, or None if it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            if problem:
                return f"{address} embeds {embedded}, and {problem}"
            if address.ipv4_mapped is not None or address in _NAT64:
                return None  # it reaches the embedded address, which is public
            # 6to4 and Teredo with a public embedded address: refused below, by _REFUSED.
    for network, reason in _REFUSED:
        if address in network:
            return f"{address} is {reason}"
    for flag, reason in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata lives there)"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(address, flag):
            return f"{address} is {reason}"
    if not address.is_global:  # the other special ranges
        return f"{address} is not globally routable"
    return None


def _target(url: str) -> tuple[str, str, int, str]:
    """(scheme, ASCII host, port, path with query) of an absolute http(s) URL, else OutboundError(refused)."""
    if _BAD_URL_CHARS.search(url):
        raise OutboundError("The URL must be plain ASCII, without spaces or backslashes.", refused=True)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundError("The URL is malformed.", refused=True) from exc
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise OutboundError("The URL must be an absolute https URL.", refused=True)
    if port == 0:
        raise OutboundError("The URL is malformed.", refused=True)
    if parts.username is not None or parts.password is not None:
        raise OutboundError("The URL must not carry credentials.", refused=True)
    if "#" in url:
        raise OutboundError("The URL must not have a fragment.", refused=True)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def url_target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of a URL exactly as `request` will call it, else OutboundError(refused):
    for callers that also check the host against a list of their own (Web Push services)."""
    return _target(url)


class _LookupTimeout(Exception):
    pass


def _getaddrinfo(host: str, port: int, *, deadline: float) -> list[Any]:
    """socket.getaddrinfo for a stream socket, or _LookupTimeout once `deadline` (time.monotonic()) has passed."""
    if not _lookup_slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
        raise _LookupTimeout
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller, who decides what it means
            outcome["error"] = exc
        finally:
            _lookup_slots.release()
            done.set()

    threading.Thread(target=lookup, name="outbound-dns", daemon=True).start()
    if not done.wait(max(deadline - time.monotonic(), 0)):
        raise _LookupTimeout
    if "error" in outcome:
        raise outcome["error"]
    infos: list[Any] = outcome["infos"]
    return infos


def _resolve(
    scheme: str, host: str, port: int, *, registering: bool, deadline: float, timeout: float
) -> list[IPAddress]:
    """Every address the host resolves to, each checked, in the resolver's order (the addresses to connect to).
    The lookup ends at `deadline` (time.monotonic()), the end of the call's `timeout` seconds."""
    try:
        infos = _getaddrinfo(host, port, deadline=deadline)
    except _LookupTimeout as exc:
        message = f"The host {host[:100]} did not resolve within {timeout:g} s."
        # At call time, like a server that does not answer: worth another try (not `refused`).
        raise OutboundError(message, refused=registering, timeout=not registering) from exc
    except socket.gaierror as exc:
        # At call time a resolver that is only temporarily failing is worth another try (not `refused`).
        refused = registering or exc.errno != socket.EAI_AGAIN
        raise OutboundError(f"The host {host[:100]} does not resolve.", refused=refused) from exc
    except (OSError, UnicodeError) as exc:
        raise OutboundError(f"The host {host[:100]} does not resolve.", refused=True) from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundError(f"The host {host[:100]} does not resolve.", refused=True)
    if approvals_settings.OUTBOUND_ALLOW_LOOPBACK_HTTP and all(a.is_loopback for a in addresses):
        return addresses  # development and tests: http or https to this machine only
    if scheme != "https":
        raise OutboundError("The URL must use https.", refused=True)
    for address in addresses:
        # Every address, not just the first: a name with one public and one private address could be steered.
        problem = address_problem(address)
        if problem:
            raise OutboundError(f"Not allowed: {problem}.", refused=True)
    return addresses


def check_url(url: str) -> None:
    """Registration-time check of a client-supplied URL (the same rules as every call). Raises OutboundError."""
    scheme, host, port, _path = _target(url)
    timeout = float(approvals_settings.OUTBOUND_TIMEOUT_SECONDS)
    _resolve(scheme, host, port, registering=True, deadline=time.monotonic() + timeout, timeout=timeout)


def post_json(
    url: str,
    payload: Any,
    *,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> OutboundResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return request("POST", url, body=body, headers=headers, timeout=timeout, max_bytes=max_bytes)


def _connect(scheme: str, host: str, port: int, address: IPAddress, timeout: float) -> HTTPConnection:
    if scheme == "https":
        # The connection goes to the checked address; TLS still names and verifies the host.
        connection: HTTPConnection = HTTPSConnection(
            str(address), port, timeout=timeout, server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED"
        )
    else:
        connection = HTTPConnection(str(address), port, timeout=timeout)
    connection.connect()
    return connection


def _abort(sock: socket.socket | None, fired: threading.Event) -> None:
    """At the deadline: end the connection under whatever read is waiting on it."""
    fired.set()
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, under TLS too


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> OutboundResponse:
    """One request to a client-supplied URL, under the rules above. Any status is returned (none is followed)."""
    timeout = timeout or float(approvals_settings.OUTBOUND_TIMEOUT_SECONDS)
    max_bytes = max_bytes or int(approvals_settings.OUTBOUND_MAX_RESPONSE_BYTES)
    scheme, host, port, path = _target(url)
    started = time.monotonic()
    deadline = started + timeout
    addresses = _resolve(scheme, host, port, registering=False, deadline=deadline, timeout=timeout)
    default_port = 443 if scheme == "https" else 80
    name = f"[{host}]" if ":" in host else host
    send_headers = {key: value for key, value in (headers or {}).items() if key.lower() not in ("host", "user-agent")}
    send_headers = {"Host": name if port == default_port else f"{name}:{port}", "User-Agent": "Countersign"} | (
        send_headers
    )

    connection: HTTPConnection | None = None
    address = addresses[0]
    failure: Exception | None = None
    for address in addresses:  # every one was checked; only a refused or failed connection moves on to the next
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            connection = _connect(scheme, host, port, address, remaining)
            break
        except (Urllib3Error, OSError, http.client.HTTPException) as exc:
            failure = exc
    if connection is None:
        # urllib3 files NewConnectionError (refused, unreachable) under its timeouts: it is not one.
        timed_out = isinstance(failure, Urllib3Timeout | TimeoutError) and not isinstance(failure, NewConnectionError)
        if failure is None or timed_out:
            raise OutboundError(f"No answer within {timeout:g} s.", timeout=True) from failure
        raise OutboundError(f"Connection failed: {type(failure).__name__}") from failure

    fired = threading.Event()
    # The socket as connected: an answer that closes the connection (HTTP/1.0, "Connection: close") takes it off
    # `connection` and reads on from it, so `connection.sock` would be None by the time the deadline comes.
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0), _abort, (connection.sock, fired))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(method, path, body=body, headers=send_headers, preload_content=False, decode_content=False)
        response = connection.getresponse()
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise OutboundError(f"The answer is larger than {max_bytes} bytes.")
        data = response.read(max_bytes + 1, decode_content=False)
    except OutboundError:
        raise
    except (Urllib3Error, OSError, http.client.HTTPException, ValueError) as exc:
        if fired.is_set() or isinstance(exc, Urllib3Timeout | TimeoutError):
            raise OutboundError(f"No answer within {timeout:g} s.", timeout=True) from exc
        raise OutboundError(f"Connection failed: {type(exc).__name__}") from exc
    finally:
        watchdog.cancel()
        connection.close()
    if fired.is_set():
        raise OutboundError(f"No answer within {timeout:g} s.", timeout=True)
    if len(data) > max_bytes:
        raise OutboundError(f"The answer is larger than {max_bytes} bytes.")
    return OutboundResponse(
        status=response.status,
        headers={key.lower(): value for key, value in response.headers.items()},
        body=data,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        address=str(address),
    )
