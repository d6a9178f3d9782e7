"""A small MCP server (Streamable HTTP, plain JSON answers) that is an OAuth protected resource of Countersign.

- RFC 9728 metadata at /.well-known/oauth-protected-resource names Countersign as its authorization server.
- Every MCP call needs a Bearer token, checked at Countersign's introspection endpoint (RFC 7662).
- `get_balance` needs only a valid token. `send_payment` runs only if the token carries an approved RFC 9396
  `payment_initiation` object for exactly that payment, and each such token pays once. Otherwise the answer is 403
  with the object the agent must get approved (the agent then asks for it over CIBA; see agent.py).

Standard library and requests only. Run it with `python examples/mcp/resource_server.py --help`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import requests

PAYMENT_TYPE = "payment_initiation"
# MCP protocol revisions this server speaks; it answers `initialize` with the client's if known, else the newest.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
SERVER_INFO = {"name": "countersign-payments-example", "version": "1.0.0"}
MAX_BODY = 64 * 1024

_AMOUNT = re.compile(r"\d{1,9}(\.\d{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")

TOOLS = [
    {
        "name": "get_balance",
        "title": "Account balance",
        "description": "The balance of the signed-in person's account.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "send_payment",
        "title": "Send a payment",
        "description": (
            "Pay a creditor from the signed-in person's account. Needs the person's approval of exactly this "
            "payment (an RFC 9396 payment_initiation authorization_details object); each approval pays once."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "amount": {"type": "string", "pattern": r"^\d{1,9}(\.\d{1,2})?$", "description": "e.g. 123.50"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217, e.g. EUR"},
                "creditor": {"type": "string", "minLength": 1, "maxLength": 70},
                "reference": {"type": "string", "minLength": 1, "maxLength": 140},
            },
            "required": ["amount", "currency", "creditor", "reference"],
            "additionalProperties": False,
        },
    },
]


class RpcError(Exception):
    """A JSON-RPC 2.0 error object (§5.1): -32600 invalid request, -32601 no such method, -32602 invalid params."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Denied(Exception):
    """An HTTP-level refusal carrying a WWW-Authenticate challenge (RFC 6750 §3, RFC 9728 §5.1)."""

    def __init__(self, status: int, error: str, description: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.body = body or {}


@dataclass
class Config:
    issuer: str  # Countersign's issuer, e.g. http://127.0.0.1:8000
    resource: str  # this server's MCP endpoint URL, its RFC 8707 resource identifier
    client_id: str  # this server's own client registration, used to call introspection
    client_secret: str
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed to call (MCP transport: DNS rebinding)


@dataclass
class Ledger:
    """The pretend bank: balances per person and the payments made. In memory, so one process only."""

    opening_balance: Decimal = Decimal("1000.00")
    balances: dict[str, Decimal] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    # SHA-256 of every token that has paid: an approval pays once. A real service keeps this in its database, for
    # as long as the tokens live.
    spent: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def balance(self, account: str) -> Decimal:
        with self.lock:
            return self.balances.get(account, self.opening_balance)

    def pay(self, *, account: str, token_hash: str, payment: dict[str, Any]) -> dict[str, Any] | None:
        """Spend the token and make the payment, both or neither; None if the token has paid already."""
        amount = Decimal(payment["instructedAmount"]["amount"])
        with self.lock:
            if token_hash in self.spent:
                return None
            self.spent.add(token_hash)
            self.balances[account] = self.balances.get(account, self.opening_balance) - amount
            record = {"payment_id": str(uuid.uuid4()), "account": account, **payment}
            self.payments.append(record)
            return record


class McpResourceServer:
    """The WSGI application: metadata document, MCP endpoint, token checks."""

    def __init__(self, config: Config, *, ledger: Ledger | None = None, http: requests.Session | None = None) -> None:
        self.config = config
        self.ledger = ledger or Ledger()
        self.http = http or requests.Session()
        self._introspection_endpoint = ""
        parts = urlsplit(config.resource)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.mcp_path = parts.path or "/"
        # RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path. The same document is
        # served at the bare well-known path too, where MCP clients look when a challenge names no URL.
        self.metadata_path = "/.well-known/oauth-protected-resource" + (parts.path if parts.path != "/" else "")
        self.metadata_url = self.origin + self.metadata_path

    # --- WSGI -------------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        if path in (self.metadata_path, "/.well-known/oauth-protected-resource"):
            if method != "GET":
                return self._respond(start_response, 405, {"error": "method_not_allowed"}, {"Allow": "GET"})
            return self._respond(start_response, 200, self.metadata())
        if path != self.mcp_path:
            return self._respond(start_response, 404, {"error": "not_found"})
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin not in self.config.allowed_origins:
            # MCP Streamable HTTP, security warning: validate Origin so a web page cannot reach a local server.
            return self._respond(start_response, 403, {"error": "origin_not_allowed"})
        if method != "POST":
            # No server-initiated SSE stream here; MCP allows 405 for GET.
            return self._respond(start_response, 405, {"error": "method_not_allowed"}, {"Allow": "POST"})
        try:
            token = self._bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
            claims = self._introspect(token)
            message = self._read_json(environ)
            if "id" not in message:
                return self._respond(start_response, 202, None)  # a notification, e.g. notifications/initialized
            try:
                result = self.dispatch(message, token=token, claims=claims)
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            except RpcError as exc:
                answer = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": exc.code, "message": exc.message}}
            return self._respond(start_response, 200, answer)
        except Denied as exc:
            return self._deny(start_response, exc)
        except RpcError as exc:
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": exc.code, "message": exc.message}}
            return self._respond(start_response, 400, error)
        except requests.RequestException:
            return self._respond(start_response, 503, {"error": "temporarily_unavailable"}, {"Retry-After": "5"})

    def metadata(self) -> dict[str, Any]:
        """RFC 9728 §2 protected resource metadata."""
        return {
            "resource": self.config.resource,
            "authorization_servers": [self.config.issuer],
            "scopes_supported": ["openid"],
            "bearer_methods_supported": ["header"],
            "authorization_details_types_supported": [PAYMENT_TYPE],
            "resource_name": "Countersign MCP payments example",
        }

    # --- Tokens -----------------------------------------------------------------------------------------------

    def _bearer_token(self, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 §3.1: no error code when the request carried no credentials at all.
            raise Denied(401, "", "A Bearer access token from the authorization server is required.")
        return token.strip()

    def _introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.1: ask Countersign, authenticating as this server's own client."""
        response = self.http.post(
            self.introspection_endpoint(),
            data={"token": token, "token_type_hint": "access_token"},
            auth=(self.config.client_id, self.config.client_secret),
            timeout=5,
        )
        response.raise_for_status()
        claims = response.json()
        if claims.get("active") is not True:
            raise Denied(401, "invalid_token", "The access token is not active.")
        audience = claims.get("aud")
        audience = [audience] if isinstance(audience, str) else audience or []
        if audience and self.config.resource not in audience:
            # RFC 8707 §2: a token bound to other resources is not for us.
            raise Denied(401, "invalid_token", "The access token is meant for another resource.")
        return claims

    def introspection_endpoint(self) -> str:
        """From Countersign's RFC 8414 metadata, looked up once."""
        if not self._introspection_endpoint:
            response = self.http.get(f"{self.config.issuer}/.well-known/oauth-authorization-server", timeout=5)
            response.raise_for_status()
            # RFC 8414 §2 makes it optional; Countersign publishes it (DOT's path as the fallback).
            metadata = response.json()
            self._introspection_endpoint = (
                metadata.get("introspection_endpoint") or f"{self.config.issuer}/oauth/introspect/"
            )
        return self._introspection_endpoint

    # --- MCP --------------------------------------------------------------------------------------------------

    def dispatch(self, message: dict[str, Any], *, token: str, claims: dict[str, Any]) -> dict[str, Any]:
        method, params = message.get("method"), message.get("params") or {}
        if not isinstance(params, dict):
            raise RpcError(-32602, "params must be an object.")
        if method == "initialize":
            asked = params.get("protocolVersion")
            return {
                "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0],
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": SERVER_INFO,
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            arguments = params.get("arguments") or {}
            if not isinstance(arguments, dict):
                raise RpcError(-32602, "arguments must be an object.")
            if params.get("name") == "get_balance":
                return self.get_balance(claims)
            if params.get("name") == "send_payment":
                return self.send_payment(arguments, token=token, claims=claims)
            raise RpcError(-32602, f"Unknown tool: {str(params.get('name'))[:40]}")
        raise RpcError(-32601, f"Method not found: {str(method)[:40]}")

    def get_balance(self, claims: dict[str, Any]) -> dict[str, Any]:
        account = _account(claims)
        balance = self.ledger.balance(account)
        data = {"account": account, "currency": "EUR", "amount": f"{balance:.2f}"}
        return _tool_result(f"Balance of {account}: EUR {balance:.2f}", data)

    def send_payment(self, arguments: dict[str, Any], *, token: str, claims: dict[str, Any]) -> dict[str, Any]:
        required = payment_details(arguments)
        if required["instructedAmount"]["currency"] != "EUR":
            return _tool_error("This example account holds EUR only.")
        approved = claims.get("authorization_details") or []
        if not any(_same_payment(detail, required) for detail in approved if isinstance(detail, dict)):
            raise _needs_approval(required, "This payment needs the account holder's approval of exactly it.")
        record = self.ledger.pay(
            account=_account(claims), token_hash=hashlib.sha256(token.encode()).hexdigest(), payment=required
        )
        if record is None:
            raise _needs_approval(required, "This approval has paid already; each approval pays once.")
        amount = required["instructedAmount"]
        text = f"Paid {amount['currency']} {amount['amount']} to {required['creditorName']} ({record['payment_id']})."
        return _tool_result(text, record)

    # --- HTTP helpers -----------------------------------------------------------------------------------------

    def _read_json(self, environ: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            raise RpcError(-32600, "The body must be one JSON-RPC message of at most 64 KiB.")
        try:
            message = json.loads(environ["wsgi.input"].read(length) or b"null")
        except ValueError:
            raise RpcError(-32700, "Parse error.") from None
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != "2.0"
            or not isinstance(message.get("method"), str)
        ):
            raise RpcError(-32600, "Not a JSON-RPC 2.0 request (batches are not supported).")
        return message

    def _deny(self, start_response: Any, exc: Denied) -> list[bytes]:
        # RFC 6750 §3 challenge plus RFC 9728 §5.1 resource_metadata, so the agent can find the authorization server.
        params = []
        if exc.error:
            params += [f'error="{exc.error}"', f'error_description="{exc.description}"']
        params += ['scope="openid"', f'resource_metadata="{self.metadata_url}"']
        body = {**({"error": exc.error} if exc.error else {}), "error_description": exc.description, **exc.body}
        return self._respond(start_response, exc.status, body, {"WWW-Authenticate": "Bearer " + ", ".join(params)})

    @staticmethod
    def _respond(
        start_response: Any, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> list[bytes]:
        reasons = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
        reasons |= {404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
        out = b"" if body is None else json.dumps(body).encode()
        head = [("Content-Length", str(len(out))), ("Cache-Control", "no-store")]
        if body is not None:
            head.append(("Content-Type", "application/json"))
        head += list((headers or {}).items())
        start_response(f"{status} {reasons[status]}", head)
        return [out]


def payment_details(arguments: dict[str, Any]) -> dict[str, Any]:
    """The RFC 9396 §2 payment_initiation object for these send_payment arguments (the amount with two decimals)."""
    amount, currency = arguments.get("amount"), arguments.get("currency")
    creditor, reference = arguments.get("creditor"), arguments.get("reference")
    if set(arguments) - {"amount", "currency", "creditor", "reference"}:
        raise RpcError(-32602, "send_payment takes amount, currency, creditor and reference only.")
    if not isinstance(amount, str) or not _AMOUNT.fullmatch(amount) or Decimal(amount) <= 0:
        raise RpcError(-32602, "amount must be a positive decimal string with at most two decimals, e.g. 123.50.")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise RpcError(-32602, "currency must be an ISO 4217 code such as EUR.")
    for name, value, limit in (("creditor", creditor, 70), ("reference", reference, 140)):
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise RpcError(-32602, f"{name} must be a non-empty string of at most {limit} characters.")
    return {
        "type": PAYMENT_TYPE,
        "instructedAmount": {"currency": currency, "amount": f"{Decimal(amount):.2f}"},
        "creditorName": creditor,
        "remittanceInformationUnstructured": reference,
    }


def _same_payment(approved: dict[str, Any], required: dict[str, Any]) -> bool:
    """Exactly this payment: the same fields and values (amounts compared as decimals). An approved object with any
    other field is not a match, since this server could not honour a restriction it does not know."""
    instructed = approved.get("instructedAmount")
    if set(approved) != set(required) or not isinstance(instructed, dict) or set(instructed) != {"currency", "amount"}:
        return False
    try:
        amount = Decimal(str(instructed["amount"]))
    except InvalidOperation:
        return False
    wanted = required["instructedAmount"]
    return (
        approved["type"] == PAYMENT_TYPE
        and instructed["currency"] == wanted["currency"]
        and amount == Decimal(wanted["amount"])
        and approved["creditorName"] == required["creditorName"]
        and approved["remittanceInformationUnstructured"] == required["remittanceInformationUnstructured"]
    )


def _needs_approval(required: dict[str, Any], description: str) -> Denied:
    # RFC 9470-style step-up: the token is fine but not enough; the body says exactly what to get approved.
    return Denied(403, "insufficient_authorization", description, {"authorization_details": [required]})


def _account(claims: dict[str, Any]) -> str:
    return str(claims.get("username") or claims.get("sub") or claims.get("client_id"))


def _tool_result(text: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "structuredContent": data, "isError": False}


def _tool_error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_wsgi_server(host: str, port: int, *, quiet: bool = False) -> WSGIServer:
    """A threaded WSGI server bound to (host, port); port 0 picks a free one. Give it the app with set_app()."""
    return ThreadingWSGIServer((host, port), QuietHandler if quiet else WSGIRequestHandler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issuer", default=os.environ.get("COUNTERSIGN_ISSUER", "http://127.0.0.1:8000"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--client-id", default=os.environ.get("MCP_RESOURCE_CLIENT_ID", "mcp-resource"))
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("MCP_RESOURCE_CLIENT_SECRET", ""),
        help="this server's client secret (default: $MCP_RESOURCE_CLIENT_SECRET)",
    )
    args = parser.parse_args()
    if not args.client_secret:
        parser.error("set MCP_RESOURCE_CLIENT_SECRET (or --client-secret) to this server's client secret")
    server = make_wsgi_server(args.host, args.port)
    config = Config(
        issuer=args.issuer.rstrip("/"),
        resource=f"http://{args.host}:{server.server_port}/mcp",
        client_id=args.client_id,
        client_secret=args.client_secret,
    )
    app = McpResourceServer(config)
    server.set_app(app)
    print(f"MCP endpoint {config.resource}, metadata {app.metadata_url}, authorization server {config.issuer}")
    server.serve_forever()


if __name__ == "__main__":
    main()
