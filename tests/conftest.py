from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.test import Client

from approvals.channels import locmem
from authz.constants import CIBA_GRANT_TYPE
from tests import factories

CIBA = "urn:openid:params:grant-type:ciba"
FORM = "application/x-www-form-urlencoded"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests import settings as test_settings

    for item in items:
        if item.get_closest_marker("postgres") and not test_settings.HAVE_POSTGRES:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL is not reachable (required in CI)"))
        if item.get_closest_marker("redis") and not test_settings.HAVE_REDIS:
            item.add_marker(pytest.mark.skip(reason="Redis is not reachable (required in CI)"))


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    cache.clear()
    for state in (locmem.outbox, locmem.failures, locmem.disabled):
        state.clear()
    yield
    for state in (locmem.outbox, locmem.failures, locmem.disabled):
        state.clear()


@pytest.fixture
def outbox() -> list:
    return locmem.outbox


@dataclass
class Agent:
    """An agent as the outside world sees it: a client_id, a secret and an HTTP client."""

    client_id: str
    client_secret: str
    http: Client
    application: Any

    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(raw).decode()}

    def post(self, path: str, params: dict[str, str] | list[tuple[str, str]], **extra: Any):
        """A form-encoded POST, as OAuth requires (Django's test client defaults to multipart)."""
        return self.http.post(path, urlencode(params), content_type=FORM, **{**self.basic(), **extra})

    def bc_authorize(self, **params: str):
        return self.post("/oauth/bc-authorize/", params)

    def poll(self, auth_req_id: str):
        return self.post("/oauth/token/", {"grant_type": CIBA, "auth_req_id": auth_req_id})


@pytest.fixture
def make_agent(db) -> Callable[..., Agent]:
    def make(**kwargs: Any) -> Agent:
        application, secret = factories.make_agent_client(**kwargs)
        return Agent(application.client_id, secret, Client(), application)

    return make


@pytest.fixture
def agent(make_agent) -> Agent:
    return make_agent(name="Travel agent")


@pytest.fixture
def approver(db):
    return factories.make_approver("alice", email="alice@example.com", phone="+14155550123")


@pytest.fixture
def approver_client(approver) -> Client:
    http = Client()
    http.force_login(approver.user)
    return http


@pytest.fixture
def ciba_grant_type() -> str:
    assert CIBA_GRANT_TYPE == CIBA
    return CIBA


@pytest.fixture
def obtain_tokens() -> Callable[..., dict[str, Any]]:
    """Run the flow once over HTTP (bc-authorize, the approver's decision, the redeeming poll); the token response."""

    def run(agent: Agent, user: Any, *, acr: str = "", **params: str) -> dict[str, Any]:
        ack = agent.bc_authorize(**{"scope": "openid", "login_hint": user.get_username(), **params})
        assert ack.status_code == 200, ack.content
        factories.decide(ack.json()["auth_req_id"], acr=acr)
        tokens = agent.poll(ack.json()["auth_req_id"])
        assert tokens.status_code == 200, tokens.content
        return tokens.json()

    return run
