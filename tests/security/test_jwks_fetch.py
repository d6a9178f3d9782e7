"""Issue 14, item 7: a slow or failing jwks_uri cannot tie up the web workers.

A failed fetch is remembered briefly, so the client's next assertions are refused without another wait; while one
fetch of a client's keys is under way (in any process: the lock is in Redis), that client's other assertions are
refused at once instead of waiting for it; and only a few fetches run at once server-wide, so clients with slow key
servers cannot hold every worker. The client's key server is a loopback fake that holds its answer until the test
releases it; the outbound deadline is set far beyond what the test waits, so a request that waited for the held
fetch would show up as one that did not return while the answer was held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from authz.clients import keys as jose
from tests import factories
from tests.authz.clients.test_private_key_jwt import Signer, make_signer, private_key, public_jwk
from tests.fakes.jwks_server import FakeJwksServer

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

# How long the test waits for requests that must not wait for a held fetch; the deadline of a fetch is far longer.
PROMPTLY = 15
OUTBOUND_DEADLINE = 60


@pytest.fixture(autouse=True)
def _long_outbound_deadline(settings: Any) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_TIMEOUT_SECONDS": OUTBOUND_DEADLINE}


@pytest.fixture
def alice() -> Any:
    return factories.make_approver("alice", email="alice@example.com")


class Background:
    """A request running in its own thread (with its own database connection), as another worker would."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.response: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.response = call()
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            connection.close()

    def done_within(self, seconds: float) -> bool:
        self.thread.join(timeout=seconds)
        return not self.thread.is_alive()

    def result(self, seconds: float = PROMPTLY) -> Any:
        assert self.done_within(seconds), "the request did not return"
        if self.error is not None:
            raise self.error
        return self.response


class Scene:
    """Fake key servers and requests in the background; at the end every held answer is released and every request
    finished, before the database is flushed."""

    def __init__(self) -> None:
        self.servers: list[FakeJwksServer] = []
        self.requests: list[Background] = []

    def server(self) -> FakeJwksServer:
        server = FakeJwksServer({"keys": [public_jwk(private_key("ES256"), "k1")]}, hang_seconds=OUTBOUND_DEADLINE)
        self.servers.append(server)
        return server

    def background(self, call: Callable[[], Any]) -> Background:
        request = Background(call)
        self.requests.append(request)
        return request

    def finish(self) -> None:
        for server in self.servers:
            server.release()
        for request in self.requests:
            request.done_within(OUTBOUND_DEADLINE)
        for server in self.servers:
            server.close()


@pytest.fixture
def scene() -> Iterator[Scene]:
    scene = Scene()
    yield scene
    scene.finish()


def signer_for(server: FakeJwksServer) -> Signer:
    return make_signer(jwks_uri=server.url)


def ask(signer: Signer) -> Any:
    """One bc-authorize from this client, over a client of its own (threads do not share one)."""
    return Signer(signer.client_id, signer.alg, signer.key, signer.kid, http=Client()).bc_authorize()


def refused(response: Any, *words: str) -> str:
    body = factories.assert_oauth_error(response, 401, "invalid_client")
    for word in words:
        assert word in body["error_description"], body
    return body["error_description"]


def test_a_failed_fetch_is_remembered_and_not_repeated_for_every_assertion(alice, scene):
    server = scene.server()
    signer = signer_for(server)
    server.respond_with("server_error")

    refused(ask(signer), "jwks_uri", "500")
    for _ in range(3):
        refused(ask(signer), "jwks_uri", "500")

    assert server.fetches == ["/jwks"]


def test_while_a_clients_keys_are_fetched_its_other_assertions_are_refused_at_once(alice, scene):
    server = scene.server()
    signer = signer_for(server)
    server.respond_with(*["hold"] * 4)  # any fetch the others made would be held too

    first = scene.background(lambda: ask(signer))
    server.wait_for_fetches(1)
    others = [scene.background(lambda: ask(signer)) for _ in range(3)]

    assert all(other.done_within(PROMPTLY) for other in others), "an assertion waited for the held fetch"
    assert server.holding
    for other in others:
        refused(other.result(), "jwks_uri")
    server.release()
    assert first.result().status_code == 200
    assert server.fetches == ["/jwks"]
    # The keys are cached now: the client is served as usual.
    assert ask(signer).status_code == 200
    assert server.fetches == ["/jwks"]


def test_another_clients_keys_are_fetched_while_one_client_is_held(alice, scene):
    slow, healthy = scene.server(), scene.server()
    held, other = signer_for(slow), signer_for(healthy)
    slow.respond_with("hold")

    first = scene.background(lambda: ask(held))
    slow.wait_for_fetches(1)
    assert scene.background(lambda: ask(other)).result().status_code == 200
    assert slow.holding

    slow.release()
    assert first.result().status_code == 200


def test_only_a_few_fetches_run_at_once_server_wide(alice, scene):
    slow = [scene.server() for _ in range(jose.JWKS_FETCHES_AT_ONCE)]
    for server in slow:
        server.respond_with("hold")
    held = [scene.background(lambda signer=signer_for(server): ask(signer)) for server in slow]
    for server in slow:
        server.wait_for_fetches(1)

    late = scene.server()
    signer = signer_for(late)
    refused(scene.background(lambda: ask(signer)).result(), "jwks_uri")
    assert late.fetches == []  # refused without calling out
    assert all(server.holding for server in slow)

    for server in slow:
        server.release()
    assert all(request.result().status_code == 200 for request in held)
    assert ask(signer).status_code == 200
    assert late.fetches == ["/jwks"]
