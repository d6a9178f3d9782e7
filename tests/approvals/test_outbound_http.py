"""approvals.outbound: the SSRF-safe helper every call to a client-supplied URL goes through (issue 5)."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from approvals import outbound
from tests.fakes.agent_endpoint import REDIRECT_PATH, FakeAgentEndpoint

TEREDO_PRIVATE = "2001:0:4136:e378:8000:63bf:f5ff:fffe"  # server 65.54.227.120, client 10.0.0.1 (stored inverted)
TEREDO_PUBLIC = "2001:0:4136:e378:8000:63bf:f7f7:f7f7"  # client 8.8.8.8


@pytest.fixture
def endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint(hang_seconds=10) as fake:
        yield fake


def loopback_http(settings: Any, allowed: bool) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": allowed}


def refusal(url: str) -> outbound.OutboundError:
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.check_url(url)
    assert caught.value.refused and not caught.value.timeout
    return caught.value


# address_problem: None = allowed; otherwise a word the reason must contain.
ADDRESSES = [
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),  # "this network"
    ("169.254.169.254", "link-local"),  # AWS, GCP, Azure metadata
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.100.100.200", "carrier-grade NAT"),  # Alibaba Cloud metadata
    ("192.0.0.192", "IETF"),  # Oracle Cloud legacy metadata; Python 3.11 calls it global
    ("168.63.129.16", "Azure"),
    ("192.88.99.1", "6to4"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "private"),  # TEST-NET-1
    ("198.51.100.1", "private"),  # TEST-NET-2
    ("203.0.113.1", "private"),  # TEST-NET-3
    ("198.18.0.1", "private"),  # benchmarking
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "private"),  # AWS metadata over IPv6
    ("ff02::1", "multicast"),
    ("2001:db8::1", "private"),  # documentation
    ("3fff::1", "documentation"),
    ("100::1", "reserved"),  # discard-only
    ("::a00:1", "reserved"),  # deprecated IPv4-compatible ::10.0.0.1
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:127.0.0.1", "embeds 127.0.0.1"),
    ("::ffff:10.0.0.1", "embeds 10.0.0.1"),
    ("::ffff:169.254.169.254", "embeds 169.254.169.254"),
    ("::ffff:8.8.8.8", None),  # IPv4-mapped: reaches 8.8.8.8
    ("2002:0a00:0001::", "embeds 10.0.0.1"),  # 6to4 of 10.0.0.1
    ("2002:7f00:0001::1", "embeds 127.0.0.1"),
    # 6to4 of a public address is still refused: 6to4 is deprecated (RFC 7526), which relay carries it is not ours to
    # choose, newer Pythons call 2002::/16 not global, and no agent needs a 6to4 callback.
    ("2002:0808:0808::", "6to4"),
    ("64:ff9b::a00:1", "embeds 10.0.0.1"),  # NAT64 (well-known prefix) of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254"),
    ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8: what DNS64 gives an IPv6-only server for a public host
    ("64:ff9b:1:a00:1::808:808", "local-use NAT64"),  # RFC 8215: its own layout; never judged by the low 32 bits
    (TEREDO_PRIVATE, "embeds 10.0.0.1"),
    (TEREDO_PUBLIC, "Teredo"),
]


@pytest.mark.parametrize(("address", "expected"), ADDRESSES, ids=[a for a, _ in ADDRESSES])
def test_address_problem(address: str, expected: str | None) -> None:
    problem = outbound.address_problem(ipaddress.ip_address(address))
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem, problem


def test_the_teredo_table_entries_embed_what_they_claim() -> None:
    assert ipaddress.IPv6Address(TEREDO_PRIVATE).teredo[1] == ipaddress.IPv4Address("10.0.0.1")
    assert ipaddress.IPv6Address(TEREDO_PUBLIC).teredo[1] == ipaddress.IPv4Address("8.8.8.8")


# check_url


@pytest.mark.parametrize("allowed", [False, True])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://8.8.8.8/cb", "https"),
        ("https:///cb", "https"),
        ("/cb", "https"),
        ("8.8.8.8/cb", "https"),
        ("https://user:pass@8.8.8.8/cb", "credentials"),
        ("https://user@8.8.8.8/cb", "credentials"),
        ("https://:@8.8.8.8/cb", "credentials"),
        ("https://8.8.8.8\\@127.0.0.1/cb", "ASCII"),
        ("https://8.8.8.8/cb#frag", "fragment"),
        ("https://8.8.8.8/cb#", "fragment"),
        ("https://8.8.8.8:99999/cb", "malformed"),
        ("https://8.8.8.8:port/cb", "malformed"),
        ("https://8.8.8.8:0/cb", "malformed"),
        ("https://[::1/cb", "malformed"),
        ("https://8.8.8.8/c b", "ASCII"),
        ("https://8.8.8.8/cb\x00", "ASCII"),
        ("https://bücher.example/cb", "ASCII"),
    ],
)
def test_check_url_refuses_malformed_urls(settings: Any, allowed: bool, url: str, message: str) -> None:
    loopback_http(settings, allowed)
    assert message in str(refusal(url))


@pytest.mark.parametrize("allowed", [False, True])
def test_check_url_refuses_http_to_anything_but_loopback(settings: Any, allowed: bool) -> None:
    loopback_http(settings, allowed)
    for url in ("http://8.8.8.8/cb", "http://10.0.0.1/cb", "http://169.254.169.254/latest/meta-data/"):
        assert "https" in str(refusal(url))


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/",
        "http://2130706433/",
        "https://0177.0.0.1/",
        "https://0x7f.0.0.1/",
        "https://0x7f000001/",
        "https://127.1/",
        "https://127.0.0.1/",
        "https://127.0.0.1:8000/cb",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:7f00:1]/",
        "https://localhost/",
        "https://LOCALHOST:443/",
        "http://localhost/",
    ],
)
def test_check_url_refuses_loopback_in_every_spelling(settings: Any, url: str) -> None:
    loopback_http(settings, False)
    error = refusal(url)
    assert "loopback" in str(error) or "https" in str(error)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/cb",
        "https://167772161/cb",  # 10.0.0.1 as one number
        "https://012.0.0.1/cb",  # 10.0.0.1 in octal
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, IPv4-mapped
        "https://[64:ff9b::a9fe:a9fe]/",  # 169.254.169.254 through NAT64
        "https://[2002:a9fe:a9fe::]/",  # 169.254.169.254 through 6to4
        "https://100.100.100.200/",
        "https://0.0.0.0/",
        "https://[::]/",
    ],
)
@pytest.mark.parametrize("allowed", [False, True])
def test_check_url_refuses_private_addresses_even_with_loopback_http_allowed(
    settings: Any, allowed: bool, url: str
) -> None:
    loopback_http(settings, allowed)
    assert "Not allowed" in str(refusal(url))


@pytest.mark.parametrize("url", ["https://[fe80::1%25eth0]/", "https://[fe80::1%eth0]/", "https://[fe80::1%lo]/"])
def test_check_url_refuses_link_local_with_a_zone(settings: Any, url: str) -> None:
    loopback_http(settings, True)
    refusal(url)  # whether the zone resolves here or not


def test_check_url_allows_loopback_only_when_configured(settings: Any) -> None:
    loopback_http(settings, True)
    for url in ("http://127.0.0.1:8000/cb", "http://localhost:8000/cb", "http://2130706433/", "https://[::1]/"):
        outbound.check_url(url)
    # IPv4-mapped loopback is not "loopback" to the flag: the flag is for plain local fakes.
    refusal("http://[::ffff:127.0.0.1]/")


def test_check_url_allows_public_https_addresses(settings: Any) -> None:
    loopback_http(settings, False)
    for url in (
        "https://8.8.8.8/cb",
        "https://8.8.8.8:8443/cb?x=1",
        "https://[2606:4700:4700::1111]/cb",
        "https://[::ffff:8.8.8.8]/",
        "https://[64:ff9b::808:808]/",
    ):
        outbound.check_url(url)


def test_a_name_that_does_not_resolve_is_refused(settings: Any) -> None:
    loopback_http(settings, False)
    assert "nothing.invalid does not resolve" in str(refusal("https://nothing.invalid/"))


def test_every_resolved_address_is_checked(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address is refused, whichever comes first."""
    loopback_http(settings, False)
    real = socket.getaddrinfo
    answers = {
        "mixed.test": ["8.8.8.8", "10.0.0.1"],
        "mixed6.test": ["2606:4700:4700::1111", "fd00:ec2::254"],
    }

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [_info(address, port) for address in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert "10.0.0.1 is private" in str(refusal("https://mixed.test/"))
    assert "fd00:ec2::254 is private" in str(refusal("https://mixed6.test/"))


# request / post_json against the fake


@pytest.fixture
def allow_loopback(settings: Any) -> None:
    loopback_http(settings, True)


@pytest.mark.usefixtures("allow_loopback")
def test_post_json_sends_exact_json_and_headers(endpoint: FakeAgentEndpoint) -> None:
    payload = {"auth_req_id": "abc", "nested": {"n": 1, "u": "é"}}
    response = outbound.post_json(endpoint.url, payload, headers={"Authorization": "Bearer tok-123"})
    (seen,) = endpoint.wait_for(1)
    assert response.status == 204
    assert seen.method == "POST" and seen.path == "/cb"
    assert seen.body == json.dumps(payload, separators=(",", ":")).encode()
    assert seen.json == payload
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["authorization"] == "Bearer tok-123"
    assert seen.headers["host"] == f"127.0.0.1:{endpoint.port}"
    assert seen.headers["content-length"] == str(len(seen.body))
    assert response.address == "127.0.0.1"
    assert response.elapsed_ms >= 0


@pytest.mark.usefixtures("allow_loopback")
def test_a_caller_cannot_override_the_host_header(endpoint: FakeAgentEndpoint) -> None:
    outbound.post_json(endpoint.url, {}, headers={"host": "evil.example", "Authorization": "Bearer t"})
    (seen,) = endpoint.wait_for(1)
    assert seen.headers["host"] == f"127.0.0.1:{endpoint.port}"


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize(
    ("mode", "status"),
    [
        ("no_content", 204),
        ("ok_body", 200),
        ("unauthorized", 401),
        ("forbidden", 403),
        ("rate_limited", 429),
        ("server_error", 500),
    ],
)
def test_statuses_are_returned_not_raised(endpoint: FakeAgentEndpoint, mode: str, status: int) -> None:
    endpoint.respond_with(mode)
    response = outbound.post_json(endpoint.url, {"x": 1})
    assert response.status == status
    if mode == "ok_body":
        assert json.loads(response.body) == {"ok": True}
        assert response.headers["content-type"] == "application/json"
    if mode == "rate_limited":
        assert response.headers["retry-after"] == "1"


@pytest.mark.usefixtures("allow_loopback")
def test_a_redirect_is_returned_and_never_followed(endpoint: FakeAgentEndpoint) -> None:
    endpoint.respond_with("redirect")
    response = outbound.post_json(endpoint.url, {"x": 1})
    assert response.status == 301
    assert response.headers["location"] == f"{endpoint.base_url}{REDIRECT_PATH}"
    time.sleep(0.3)
    assert [r.path for r in endpoint.received] == ["/cb"]


@pytest.mark.usefixtures("allow_loopback")
def test_the_fake_records_the_redirect_target_when_asked_directly(endpoint: FakeAgentEndpoint) -> None:
    """The fake would see a followed redirect: the previous test's silence means something."""
    outbound.request("GET", f"{endpoint.base_url}{REDIRECT_PATH}")
    assert [r.path for r in endpoint.wait_for(1)] == [REDIRECT_PATH]


@pytest.mark.usefixtures("allow_loopback")
def test_a_hanging_endpoint_times_out(endpoint: FakeAgentEndpoint) -> None:
    endpoint.respond_with("hang")
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.post_json(endpoint.url, {"x": 1}, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert caught.value.timeout and not caught.value.refused
    endpoint.wait_for(1)


@pytest.mark.usefixtures("allow_loopback")
def test_the_time_cap_covers_a_trickled_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """One deadline for the whole call: a server sending a byte just inside each read timeout cannot stretch it."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(outbound.OutboundError) as caught:
            outbound.request("GET", f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=1)
    finally:
        stop.set()
        server.close()
    assert caught.value.timeout
    assert time.monotonic() - started < 2


@pytest.mark.usefixtures("allow_loopback")
def test_a_huge_answer_is_cut_off(endpoint: FakeAgentEndpoint) -> None:
    endpoint.respond_with("huge")
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.post_json(endpoint.url, {"x": 1}, max_bytes=1024)
    assert "larger than 1024 bytes" in str(caught.value)
    assert not caught.value.refused and not caught.value.timeout


@pytest.mark.usefixtures("allow_loopback")
def test_a_declared_length_over_the_cap_is_refused_before_reading(endpoint: FakeAgentEndpoint) -> None:
    endpoint.respond_with("ok_body")
    with pytest.raises(outbound.OutboundError, match="larger than 5 bytes"):
        outbound.post_json(endpoint.url, {"x": 1}, max_bytes=5)


@pytest.mark.usefixtures("allow_loopback")
def test_the_default_size_cap_is_the_setting(settings: Any, endpoint: FakeAgentEndpoint) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_MAX_RESPONSE_BYTES": 2048}
    endpoint.respond_with("huge")
    with pytest.raises(outbound.OutboundError, match="larger than 2048 bytes"):
        outbound.post_json(endpoint.url, {"x": 1})


@pytest.mark.usefixtures("allow_loopback")
def test_a_refused_connection_is_a_plain_failure() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.post_json(f"http://127.0.0.1:{port}/cb", {"x": 1})
    assert not caught.value.refused and not caught.value.timeout
    assert "Connection failed" in str(caught.value)


def test_request_applies_the_rules_at_every_call(settings: Any, endpoint: FakeAgentEndpoint) -> None:
    """A URL accepted at registration is checked again at the call: switching loopback http off refuses it."""
    loopback_http(settings, False)
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.post_json(endpoint.url, {"x": 1})
    assert caught.value.refused
    time.sleep(0.2)
    assert endpoint.received == []


# Connects to the address it checked


@pytest.mark.usefixtures("allow_loopback")
def test_a_name_is_sent_as_host_while_the_connection_goes_to_the_checked_address(endpoint: FakeAgentEndpoint) -> None:
    response = outbound.post_json(f"http://localhost:{endpoint.port}/cb", {"x": 1})
    (seen,) = endpoint.wait_for(1)
    assert seen.headers["host"] == f"localhost:{endpoint.port}"
    assert response.address in ("127.0.0.1", "::1")


def _info(address: str, port: Any) -> tuple[Any, ...]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))


@pytest.mark.usefixtures("allow_loopback")
def test_no_second_resolution_so_no_dns_rebinding(monkeypatch: pytest.MonkeyPatch, endpoint: FakeAgentEndpoint) -> None:
    """The name resolves to 127.0.0.1, then (as a rebinding attacker would arrange) to 10.0.0.1: the first counts."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)  # the numeric address urllib3 connects to
        lookups.append(host)
        return [_info("127.0.0.1" if len(lookups) == 1 else "10.0.0.1", port)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    response = outbound.post_json(f"http://rebind.test:{endpoint.port}/cb", {"x": 1})
    assert response.status == 204 and response.address == "127.0.0.1"
    assert lookups == ["rebind.test"]
    assert endpoint.wait_for(1)[0].headers["host"] == f"rebind.test:{endpoint.port}"


@pytest.mark.usefixtures("allow_loopback")
def test_each_checked_address_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch, endpoint: FakeAgentEndpoint) -> None:
    """localhost may answer ::1 or another loopback address first while the server listens on 127.0.0.1 only."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "multi.test":
            return real(host, port, *args, **kwargs)
        return [_info("127.0.0.2", port), _info("127.0.0.1", port)]  # nothing listens on 127.0.0.2

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    response = outbound.post_json(f"http://multi.test:{endpoint.port}/cb", {"x": 1})
    assert response.status == 204 and response.address == "127.0.0.1"
    assert len(endpoint.wait_for(1)) == 1


def test_the_fake_closes_promptly_while_hanging() -> None:
    fake = FakeAgentEndpoint(hang_seconds=30)
    fake.respond_with("hang")
    sock = socket.create_connection(("127.0.0.1", fake.port))
    sock.sendall(b"POST /cb HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    fake.wait_for(1)
    started = time.monotonic()
    fake.close()
    sock.close()
    assert time.monotonic() - started < 2
