"""The outbound helper (approvals/outbound.py), issue 14 item 12: site-local IPv6 (fec0::/10) is refused like every
other address that is not globally routable, and name resolution counts against the call's one deadline, so a resolver
that never answers cannot hold a worker (a Celery task, a web request fetching a jwks_uri) past it.

Resolution is controlled as tests/approvals/test_outbound_http.py controls it: through socket.getaddrinfo, the standard
library's seam, never through our own functions."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from approvals import outbound
from tests.approvals.test_outbound_http import _info

SITE_LOCAL = ["fec0::1", "fec0:0:0:ffff::1", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fed0::8:8"]


@pytest.mark.parametrize("address", SITE_LOCAL)
def test_site_local_ipv6_is_refused(address: str) -> None:
    problem = outbound.address_problem(ipaddress.ip_address(address))

    assert problem is not None and "site-local" in problem, problem


def test_the_neighbours_of_site_local_keep_their_own_reasons() -> None:
    assert "link-local" in (outbound.address_problem(ipaddress.ip_address("febf:ffff::1")) or "")
    assert "multicast" in (outbound.address_problem(ipaddress.ip_address("ff00::1")) or "")


def test_a_name_resolving_to_site_local_is_refused(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": False}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "site-local.test":
            return real(host, port, *args, **kwargs)
        return [_info("2606:4700:4700::1111", port), _info("fec0::1", port)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.check_url("https://site-local.test/cb")
    assert caught.value.refused and "fec0::1 is site-local" in str(caught.value)


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """getaddrinfo that never answers for *.hang.test until the test is over (a resolver whose upstream is down or
    deliberately silent); the names it was asked for."""
    real = socket.getaddrinfo
    release = threading.Event()
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if not str(host).endswith("hang.test"):
            return real(host, port, *args, **kwargs)
        asked.append(host)
        release.wait(30)
        return [_info("8.8.8.8", port)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


def test_a_hanging_resolver_cannot_hold_a_call_past_its_deadline(hanging_resolver: list[str]) -> None:
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.post_json("https://cb.hang.test/cb", {"x": 1}, timeout=0.3)

    assert time.monotonic() - started < 1.5
    # A timeout, like a server that does not answer: the notification is retried (authz.ciba.notify).
    assert caught.value.timeout and not caught.value.refused
    assert hanging_resolver == ["cb.hang.test"]


def test_a_hanging_resolver_cannot_hold_registration(settings: Any, hanging_resolver: list[str]) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_TIMEOUT_SECONDS": 0.3}
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError) as caught:
        outbound.check_url("https://jwks.hang.test/keys")

    assert time.monotonic() - started < 1.5
    assert caught.value.refused and "did not resolve within" in str(caught.value)


def test_hung_lookups_do_not_pile_up_without_bound(hanging_resolver: list[str]) -> None:
    """Each hung lookup holds a thread until the system resolver gives up; past a small bound, calls fail at their
    deadline without starting another, so a flood of hanging names cannot exhaust the process's threads."""
    threads_before = threading.active_count()
    for n in range(outbound.MAX_CONCURRENT_LOOKUPS + 5):
        with pytest.raises(outbound.OutboundError):
            outbound.post_json(f"https://n{n}.hang.test/cb", {}, timeout=0.05)

    assert len(hanging_resolver) == outbound.MAX_CONCURRENT_LOOKUPS
    assert threading.active_count() - threads_before <= outbound.MAX_CONCURRENT_LOOKUPS
