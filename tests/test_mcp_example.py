"""examples/mcp end to end: the example MCP resource server (on 127.0.0.1, its own thread) and the example agent,
against the real Countersign in pytest-django's live server. Approvals go through approvals.services, the way the
approver's page makes them."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from approvals.models import ApprovalRequest
from authz.models import AuthorizationDetailType
from examples.mcp.agent import AgentError, McpAgent
from examples.mcp.resource_server import Config, Ledger, McpResourceServer, make_wsgi_server
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

PAYMENT = {"amount": "123.50", "currency": "EUR", "creditor": "Merchant A", "reference": "Ref 42"}
# RFC 9396 §2: what the server asks to be approved for PAYMENT.
PAYMENT_DETAILS = {
    "type": "payment_initiation",
    "instructedAmount": {"currency": "EUR", "amount": "123.50"},
    "creditorName": "Merchant A",
    "remittanceInformationUnstructured": "Ref 42",
}


def _payment_type_defaults() -> dict[str, Any]:
    """The payment type as Countersign ships it (its data migration), so the example meets the real schema."""
    migration = importlib.import_module("authz.migrations.0005_example_authorization_detail_types")
    return next(example for example in migration.EXAMPLES if example["type"] == "payment_initiation")


@dataclass
class Mcp:
    url: str
    app: McpResourceServer
    ledger: Ledger
    issuer: str


@pytest.fixture
def countersign(live_server: Any, settings: Any) -> str:
    settings.PUBLIC_URL = live_server.url
    # The live server's database is flushed between tests, data migrations' rows included.
    AuthorizationDetailType.objects.get_or_create(type="payment_initiation", defaults=_payment_type_defaults())
    return live_server.url


@pytest.fixture
def mcp(countersign: str) -> Iterator[Mcp]:
    # The resource server is a client of Countersign's own, for introspection only, registered as
    # `create_agent_client --no-ciba` does: a resource server (it may introspect the agents' unbound tokens).
    application, secret = factories.make_agent_client(
        name="MCP payments resource", ciba_enabled=False, resource_server=True
    )
    issuer = requests.get(f"{countersign}/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]
    server = make_wsgi_server("127.0.0.1", 0, quiet=True)
    url = f"http://127.0.0.1:{server.server_port}/mcp"
    ledger = Ledger()
    app = McpResourceServer(
        Config(issuer=issuer, resource=url, client_id=application.client_id, client_secret=secret), ledger=ledger
    )
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Mcp(url=url, app=app, ledger=ledger, issuer=issuer)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class Person:
    """Stands in for the person: the agent's wait between polls is when they approve (no real sleeping)."""

    def __init__(self, *, approve: bool = True) -> None:
        self.approve = approve
        self.seen: list[ApprovalRequest] = []

    def __call__(self, seconds: float) -> None:
        pending = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).order_by("-created_at").first()
        assert pending is not None, "the agent waits, but nothing is pending"
        self.seen.append(factories.decide(pending.auth_req_id, approve=self.approve))


@pytest.fixture
def agent_client(db: Any) -> tuple[str, str]:
    application, secret = factories.make_agent_client(name="Payments agent")
    return application.client_id, secret


def make_agent(mcp: Mcp, agent_client: tuple[str, str], person: Person | None = None) -> McpAgent:
    client_id, secret = agent_client
    return McpAgent(
        mcp_url=mcp.url,
        client_id=client_id,
        client_secret=secret,
        login_hint="alice",
        sleep=person or Person(),
        say=lambda line: None,
    )


def call(mcp: Mcp, method: str, params: dict[str, Any], *, token: str = "") -> requests.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    return requests.post(mcp.url, json=message, headers=headers, timeout=10)


def pay(mcp: Mcp, token: str, **changes: str) -> requests.Response:
    return call(mcp, "tools/call", {"name": "send_payment", "arguments": {**PAYMENT, **changes}}, token=token)


def approved_token(mcp: Mcp, agent: McpAgent, details: list[dict[str, Any]] | None = None) -> str:
    """An access token for alice, approved with these authorization_details (none: a plain sign-in)."""
    agent.discover(call(mcp, "initialize", {}))
    ack = agent.backchannel_authorize(binding_message="Test approval", authorization_details=details)
    factories.decide(ack["auth_req_id"])
    return agent.poll_for_tokens(ack)["access_token"]


def test_metadata_document(mcp: Mcp) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        response = requests.get(mcp.url.removesuffix("/mcp") + path, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "resource": mcp.url,
            "authorization_servers": [mcp.issuer],
            "scopes_supported": ["openid"],
            "bearer_methods_supported": ["header"],
            "authorization_details_types_supported": ["payment_initiation"],
            "resource_name": "Countersign MCP payments example",
        }
    # The authorization server it names can approve that type (RFC 9396 §10).
    server_metadata = requests.get(f"{mcp.issuer}/.well-known/oauth-authorization-server", timeout=5).json()
    assert "payment_initiation" in server_metadata["authorization_details_types_supported"]


def test_call_without_token_is_401_naming_the_metadata(mcp: Mcp) -> None:
    response = call(mcp, "tools/list", {})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and "error=" not in challenge  # RFC 6750 §3.1: no credentials, no code
    metadata_url = f"{mcp.url.removesuffix('/mcp')}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in challenge
    assert requests.get(metadata_url, timeout=5).json()["resource"] == mcp.url

    invalid = call(mcp, "tools/list", {}, token="not-a-token-countersign-issued")
    assert invalid.status_code == 401
    assert 'error="invalid_token"' in invalid.headers["WWW-Authenticate"]
    assert "resource_metadata=" in invalid.headers["WWW-Authenticate"]


def test_sensitive_tool_without_approved_payment_is_403_with_the_object_to_approve(
    mcp: Mcp, approver: Any, agent_client: tuple[str, str]
) -> None:
    token = approved_token(mcp, make_agent(mcp, agent_client))
    balance = call(mcp, "tools/call", {"name": "get_balance", "arguments": {}}, token=token)
    assert balance.status_code == 200
    assert balance.json()["result"]["structuredContent"] == {"account": "alice", "currency": "EUR", "amount": "1000.00"}

    response = pay(mcp, token)
    assert response.status_code == 403
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_authorization"')
    assert "resource_metadata=" in challenge
    assert response.json()["error"] == "insufficient_authorization"
    assert response.json()["authorization_details"] == [PAYMENT_DETAILS]
    assert mcp.ledger.payments == []


def test_agent_gets_approval_and_pays(mcp: Mcp, approver: Any, agent_client: tuple[str, str]) -> None:
    person = Person()
    agent = make_agent(mcp, agent_client, person)

    info = agent.initialize()  # 401 → discovery → the person approves connecting the agent
    assert info["serverInfo"]["name"] == "countersign-payments-example"
    assert [tool["name"] for tool in agent.request("tools/list")["tools"]] == ["get_balance", "send_payment"]
    result = agent.call_tool("send_payment", PAYMENT)  # 403 → the person approves this payment → retried

    assert result["isError"] is False
    assert result["content"][0]["text"].startswith("Paid EUR 123.50 to Merchant A")
    assert [p["instructedAmount"] for p in mcp.ledger.payments] == [{"currency": "EUR", "amount": "123.50"}]
    assert agent.call_tool("get_balance", {})["structuredContent"]["amount"] == "876.50"
    # What the approver saw: first the sign-in, then exactly the payment.
    connect, payment = person.seen
    assert connect.binding_message == "Connect the MCP payments agent" and connect.authorization_details == []
    assert payment.binding_message == "Pay EUR 123.50 to Merchant A"
    assert payment.authorization_details == [PAYMENT_DETAILS]


def test_agent_reports_a_denied_payment(mcp: Mcp, approver: Any, agent_client: tuple[str, str]) -> None:
    agent = make_agent(mcp, agent_client, Person(approve=False))
    agent.access_token = approved_token(mcp, agent)
    with pytest.raises(AgentError, match="access_denied"):
        agent.call_tool("send_payment", PAYMENT)
    assert mcp.ledger.payments == []


def test_payment_must_match_the_approval_and_pays_once(mcp: Mcp, approver: Any, agent_client: tuple[str, str]) -> None:
    token = approved_token(mcp, make_agent(mcp, agent_client), [PAYMENT_DETAILS])

    other_amount = pay(mcp, token, amount="124.00")
    assert other_amount.status_code == 403
    wanted = other_amount.json()["authorization_details"]
    assert wanted == [{**PAYMENT_DETAILS, "instructedAmount": {"currency": "EUR", "amount": "124.00"}}]
    for changes in ({"creditor": "Merchant B"}, {"reference": "Ref 43"}, {"currency": "USD"}):
        refused = pay(mcp, token, **changes)
        assert refused.status_code in (200, 403)
        assert refused.status_code == 403 or refused.json()["result"]["isError"] is True
    assert mcp.ledger.payments == []

    paid = pay(mcp, token, amount="123.5")  # the same amount, written differently
    assert paid.status_code == 200 and paid.json()["result"]["isError"] is False
    again = pay(mcp, token)
    assert again.status_code == 403
    assert 'error="insufficient_authorization"' in again.headers["WWW-Authenticate"]
    assert again.json()["authorization_details"] == [PAYMENT_DETAILS]
    assert len(mcp.ledger.payments) == 1


def test_simultaneous_payments_with_one_token_pay_once(mcp: Mcp, approver: Any, agent_client: tuple[str, str]) -> None:
    token = approved_token(mcp, make_agent(mcp, agent_client), [PAYMENT_DETAILS])
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(response.status_code for response in pool.map(lambda _: pay(mcp, token), range(6)))
    assert statuses == [200, 403, 403, 403, 403, 403]
    assert len(mcp.ledger.payments) == 1
