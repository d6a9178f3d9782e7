"""The poll-mode flow end to end over HTTP: bc-authorize → approver page → token → introspection/userinfo."""

from __future__ import annotations

import base64
import hashlib

import jwt
import pytest
from django.test import Client

from approvals.models import ApprovalRequest, AuditEvent

pytestmark = pytest.mark.django_db


def _at_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def test_poll_mode_end_to_end(agent, approver, approver_client, outbox, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        ack = agent.bc_authorize(scope="openid profile", login_hint="alice", binding_message="Book flight LH 400")
    assert ack.status_code == 200, ack.content
    assert ack["Cache-Control"] == "no-store"
    body = ack.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    assert body["interval"] == 5 and body["expires_in"] == 300

    pending = agent.poll(body["auth_req_id"])
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"

    # The prompt links to the approver's page for exactly this request (a signed link: approvals.links).
    (prompt,) = outbox
    assert prompt.binding_message == "Book flight LH 400"
    assert body["auth_req_id"] not in prompt.link
    path = prompt.link.removeprefix("http://testserver")
    page = approver_client.get(path, follow=True)
    assert page.status_code == 200
    assert "Book flight LH 400" in page.content.decode()
    assert "Travel agent" in page.content.decode()

    decided = approver_client.post(page.redirect_chain[-1][0] + "decide/", {"decision": "approve"})
    assert decided.status_code == 302

    tokens = agent.poll(body["auth_req_id"])
    assert tokens.status_code == 200, tokens.content
    assert tokens["Cache-Control"] == "no-store"
    token = tokens.json()
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "openid profile"
    assert token["expires_in"] > 0
    assert token["refresh_token"]

    jwks = client.get("/oauth/jwks/").json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(token["id_token"], key=key, algorithms=["RS256"], audience=agent.client_id)
    assert claims["iss"] == "http://testserver"
    assert claims["sub"] == str(approver.user.pk)
    assert {"exp", "iat", "auth_time"} <= set(claims)
    assert claims["at_hash"] == _at_hash(token["access_token"])

    # Exactly once: the next redemption is invalid_grant.
    again = agent.poll(body["auth_req_id"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # DOT's introspection, userinfo and revocation work on the issued tokens unchanged.
    introspection = agent.post("/oauth/introspect/", {"token": token["access_token"]})
    assert introspection.status_code == 200
    assert introspection.json()["active"] is True
    assert introspection.json()["client_id"] == agent.client_id
    assert introspection.json()["username"] == "alice"
    assert introspection.json()["iss"] == claims["iss"]  # the issuer of this request, as in the ID token
    assert introspection.json()["sub"] == claims["sub"]
    # RFC 7662 §2.1: POST only; a token in a query string would end up in access logs.
    in_query = agent.http.get("/oauth/introspect/", {"token": token["access_token"]}, **agent.basic())
    assert in_query.status_code == 405 and in_query["Allow"] == "POST"

    userinfo = Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {token['access_token']}")
    assert userinfo.status_code == 200
    assert userinfo.json()["sub"] == str(approver.user.pk)

    revoked = agent.post("/oauth/revoke/", {"token": token["access_token"]})
    assert revoked.status_code == 200
    inactive = agent.post("/oauth/introspect/", {"token": token["access_token"]})
    assert inactive.json() == {"active": False}

    approval_request = ApprovalRequest.objects.get(auth_req_id=body["auth_req_id"])
    assert approval_request.status == ApprovalRequest.Status.CONSUMED
    kinds = list(approval_request.events.values_list("kind", flat=True))
    assert kinds == [
        AuditEvent.Kind.CREATED,
        AuditEvent.Kind.PROMPTED,
        AuditEvent.Kind.LINK_OPENED,
        AuditEvent.Kind.APPROVED,
        AuditEvent.Kind.CONSUMED,
        AuditEvent.Kind.REVOKED,
    ]
