"""An agent that uses the example MCP server and asks its person for approval through Countersign (CIBA).

1. Any MCP call without a token gets 401 with `WWW-Authenticate: Bearer resource_metadata="…"`. The agent reads the
   RFC 9728 resource metadata, then the authorization server's RFC 8414 metadata, and asks the person over CIBA to
   connect it (scope openid).
2. `send_payment` with that token gets 403 `insufficient_authorization` and, in the body, the RFC 9396
   authorization_details object for exactly that payment. The agent asks the person to approve that object over
   CIBA and retries with the new access token.

Plain OAuth over requests, no SDK. Run it with `python examples/mcp/agent.py --help`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
PROTOCOL_VERSION = "2025-11-25"
_RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')


class AgentError(Exception):
    pass


class McpAgent:
    def __init__(
        self,
        *,
        mcp_url: str,
        client_id: str,
        client_secret: str,
        login_hint: str,
        http: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] = print,
    ) -> None:
        self.mcp_url = mcp_url
        self.auth = (client_id, client_secret)
        self.login_hint = login_hint
        self.http = http or requests.Session()
        self.sleep = sleep
        self.say = say
        self.access_token = ""
        self.authorization_server: dict[str, Any] = {}
        self._ids = itertools.count(1)

    # --- MCP --------------------------------------------------------------------------------------------------

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON-RPC call; on 401 or 403 the agent gets the person's approval and tries once more."""
        for _attempt in range(3):
            response = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or {}})
            if response.status_code == 401:
                self.discover(response)
                self.access_token = self.get_approval(binding_message="Connect the MCP payments agent")["access_token"]
                continue
            body = _json(response)
            if response.status_code == 403 and body.get("error") == "insufficient_authorization":
                details = body.get("authorization_details")
                if not isinstance(details, list) or not details:
                    raise AgentError(f"403 without authorization_details: {body}")
                self.discover(response)
                self.say(f"The server asks for approval of: {json.dumps(details)}")
                tokens = self.get_approval(binding_message=_binding_message(details), authorization_details=details)
                self.access_token = tokens["access_token"]
                continue
            if response.status_code != 200:
                raise AgentError(f"MCP {method}: HTTP {response.status_code} {body}")
            if "error" in body:
                raise AgentError(f"MCP {method}: {body['error']}")
            return body["result"]
        raise AgentError(f"MCP {method}: still refused after approval")

    def initialize(self) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "countersign-example-agent", "version": "1.0.0"},
            },
        )
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def _post(self, message: dict[str, Any]) -> requests.Response:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return self.http.post(self.mcp_url, data=json.dumps(message), headers=headers, timeout=10)

    # --- OAuth ------------------------------------------------------------------------------------------------

    def discover(self, response: requests.Response) -> dict[str, Any]:
        """RFC 9728 §5.1 → §3 → RFC 8414 §3: from the challenge to the authorization server's endpoints."""
        if self.authorization_server:
            return self.authorization_server
        found = _RESOURCE_METADATA.search(response.headers.get("WWW-Authenticate", ""))
        if not found:
            raise AgentError("The MCP server's challenge names no resource_metadata.")
        resource = _get_json(self.http, found.group(1))
        if resource.get("resource") != self.mcp_url:
            raise AgentError(f"Resource metadata is for {resource.get('resource')!r}, not {self.mcp_url!r}.")
        issuer = resource["authorization_servers"][0].rstrip("/")
        metadata = _get_json(self.http, f"{issuer}/.well-known/oauth-authorization-server")
        if metadata.get("issuer", "").rstrip("/") != issuer:
            raise AgentError(f"Authorization server metadata names issuer {metadata.get('issuer')!r}.")
        self.authorization_server = metadata
        return metadata

    def backchannel_authorize(
        self, *, binding_message: str, authorization_details: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """CIBA Core §7.1 (+ RFC 9396 §3): ask the person; the answer has auth_req_id, expires_in and interval."""
        params = {"scope": "openid", "login_hint": self.login_hint, "binding_message": binding_message}
        if authorization_details:
            params["authorization_details"] = json.dumps(authorization_details)
        response = self.http.post(
            self.authorization_server["backchannel_authentication_endpoint"], data=params, auth=self.auth, timeout=10
        )
        if response.status_code != 200:
            raise AgentError(f"bc-authorize: HTTP {response.status_code} {_json(response)}")
        return response.json()

    def poll_for_tokens(self, ack: dict[str, Any]) -> dict[str, Any]:
        """CIBA Core §7.3, §11: poll the token endpoint every `interval` seconds until the person decides."""
        interval = int(ack.get("interval", 5))
        deadline = time.monotonic() + int(ack["expires_in"])
        data = {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": ack["auth_req_id"]}
        while True:
            response = self.http.post(
                self.authorization_server["token_endpoint"], data=data, auth=self.auth, timeout=10
            )
            body = _json(response)
            if response.status_code == 200:
                return body
            error = body.get("error")
            if error == "slow_down":
                interval += 5  # CIBA Core §11 via RFC 8628 §3.5
            elif error != "authorization_pending":
                raise AgentError(f"token: {error}: {body.get('error_description', '')}")
            if time.monotonic() + interval > deadline:
                raise AgentError("The approval request expired.")
            self.sleep(interval)

    def get_approval(
        self, *, binding_message: str, authorization_details: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        ack = self.backchannel_authorize(binding_message=binding_message, authorization_details=authorization_details)
        self.say(f"Waiting for {self.login_hint} to approve “{binding_message}” on their phone…")
        tokens = self.poll_for_tokens(ack)
        self.say("Approved.")
        return tokens


def _binding_message(details: list[dict[str, Any]]) -> str:
    """What the person checks against what the agent shows them (CIBA Core §7.1: short, plain text)."""
    first = details[0]
    amount = first.get("instructedAmount") or {}
    if first.get("type") == "payment_initiation" and amount:
        return f"Pay {amount.get('currency')} {amount.get('amount')} to {first.get('creditorName', '')}"[:64]
    return f"Approve {first.get('type', 'a request')}"[:64]


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _get_json(http: requests.Session, url: str) -> dict[str, Any]:
    response = http.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def _text(result: dict[str, Any]) -> str:
    return " ".join(part.get("text", "") for part in result.get("content", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mcp-url", default="http://127.0.0.1:8001/mcp")
    parser.add_argument("--client-id", default=os.environ.get("COUNTERSIGN_CLIENT_ID", "demo-agent"))
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("COUNTERSIGN_CLIENT_SECRET", ""),
        help="the agent's client secret (default: $COUNTERSIGN_CLIENT_SECRET)",
    )
    parser.add_argument("--login-hint", default="demo", help="the person the agent acts for")
    parser.add_argument("--amount", default="123.50")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--creditor", default="Merchant A")
    parser.add_argument("--reference", default="Ref 42")
    args = parser.parse_args()
    if not args.client_secret:
        parser.error("set COUNTERSIGN_CLIENT_SECRET (or --client-secret) to the agent's client secret")
    agent = McpAgent(
        mcp_url=args.mcp_url, client_id=args.client_id, client_secret=args.client_secret, login_hint=args.login_hint
    )
    try:
        run(agent, args)
    except AgentError as exc:
        sys.exit(f"Stopped: {exc}")


def run(agent: McpAgent, args: argparse.Namespace) -> None:
    info = agent.initialize()
    print(f"Connected to {info['serverInfo']['name']} (MCP {info['protocolVersion']}).")
    tools = agent.request("tools/list")["tools"]
    print("Tools:", ", ".join(tool["name"] for tool in tools))
    print(_text(agent.call_tool("get_balance", {})))
    payment = {"amount": args.amount, "currency": args.currency, "creditor": args.creditor, "reference": args.reference}
    print(_text(agent.call_tool("send_payment", payment)))
    print(_text(agent.call_tool("get_balance", {})))


if __name__ == "__main__":
    main()
