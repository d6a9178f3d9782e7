"""Issue 18, item 1: a request's admin page tells its whole story in one read-only timeline, with links to the agent
and the tokens; and tokens are read-only in admin, for superusers too, each leading back to its request."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from approvals.models import ApprovalRequest, AuditEvent
from authz.ciba import notify
from tests import factories
from tests.fakes.agent_endpoint import FakeAgentEndpoint

pytestmark = pytest.mark.django_db

Kind = AuditEvent.Kind
AccessToken = get_access_token_model()
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def change_url(approval_request: ApprovalRequest) -> str:
    return f"/admin/approvals/approvalrequest/{approval_request.pk}/change/"


def timeline_rows(html: str) -> list[list[str]]:
    table = html[html.index('<table class="review-timeline">') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [
        [unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def token_row(value: str) -> Any:
    return AccessToken.objects.get(token_checksum=hashlib.sha256(value.encode()).hexdigest())


@pytest.fixture
def superuser_http() -> Client:
    http = Client()
    http.force_login(factories.make_staff("root", superuser=True))
    return http


def test_the_timeline_of_a_full_flow_in_order(
    agent, make_agent, approver, outbox, superuser_http, django_capture_on_commit_callbacks
):
    booker = make_agent(name="Booking agent")
    # bc-authorize; the prompt goes out once the request commits.
    with django_capture_on_commit_callbacks(execute=True):
        ack = agent.bc_authorize(scope="openid profile", login_hint="alice", binding_message="Book flight LH 400")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    # The person opens the prompt's link on a phone that is not signed in, opens it again, and approves with it.
    (prompt,) = outbox
    phone = Client()
    page = phone.get(prompt.link.removeprefix("http://testserver"), follow=True)
    phone.get(prompt.link.removeprefix("http://testserver"))
    assert phone.post(page.redirect_chain[-1][0] + "decide/", {"decision": "approve"}).status_code == 302
    # Tokens, a refresh, an exchange for another agent, then the agent revokes its token at the endpoint.
    tokens = agent.poll(auth_req_id).json()
    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content
    refreshed_token = token_row(refreshed.json()["access_token"])
    exchanged = agent.post(
        "/oauth/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": refreshed.json()["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": booker.client_id,
        },
    )
    assert exchanged.status_code == 200, exchanged.content
    exchanged_token = token_row(exchanged.json()["access_token"])

    before_revocation = superuser_http.get(change_url(approval_request)).content.decode()
    # The tokens standing now are linked from the timeline; the first one went with the refresh.
    assert f'href="/admin/oauth2_provider/accesstoken/{refreshed_token.pk}/change/"' in before_revocation
    assert f'href="/admin/oauth2_provider/accesstoken/{exchanged_token.pk}/change/"' in before_revocation

    assert agent.post("/oauth/revoke/", {"token": refreshed.json()["access_token"]}).status_code == 200
    response = superuser_http.get(change_url(approval_request))

    assert response.status_code == 200
    html = response.content.decode()
    rows = timeline_rows(html)
    assert [what for _when, what, _by, _detail in rows] == [
        "Created",
        "Prompt attempt 1: locmem",
        "Prompt sent",
        "Prompt's link opened",  # once, though opened twice
        "Approved",
        "Tokens issued",
        "Tokens refreshed",
        "Tokens exchanged",
        "Tokens revoked",
    ]
    assert all(re.fullmatch(TIME, when) for when, *_rest in rows)
    assert [when for when, *_rest in rows] == sorted(when for when, *_rest in rows)
    by = {what: who for _when, what, who, _detail in rows}
    assert by["Created"] == f"agent {agent.client_id}"
    assert by["Approved"] == "alice"
    assert by["Tokens exchanged"] == f"agent {agent.client_id}"
    assert by["Tokens revoked"] == f"agent {agent.client_id}"
    detail = {what: text for _when, what, _by, text in rows}
    assert "with the prompt's link" in detail["Approved"]
    assert "not signed in" in detail["Prompt's link opened"]
    assert "at the revocation endpoint; 1 exchanged token(s) with it" in detail["Tokens revoked"]
    assert f"from access token #{refreshed_token.pk}" in detail["Tokens exchanged"]
    assert "(no longer exists)" in detail["Tokens revoked"]
    # The agent's page is one click away; no token value, no auth_req_id, anywhere on the page.
    assert f'href="/admin/oauth2_provider/application/{agent.application.pk}/change/"' in html
    for secret in (auth_req_id, tokens["access_token"], tokens["refresh_token"], refreshed.json()["access_token"]):
        assert secret not in html
    # The trail itself, as stored: no actor for the agent's own calls, tokens named by id and checksum prefix.
    revoked = AuditEvent.objects.get(request=approval_request, kind=Kind.REVOKED)
    assert revoked.actor is None
    assert revoked.detail == {
        "client_id": agent.client_id,
        "access_token_id": refreshed_token.pk,
        "token_checksum_prefix": refreshed_token.token_checksum[:12],
        "exchanged_revoked": 1,
        "via": "revocation_endpoint",
    }
    approval_request.refresh_from_db()
    assert (approval_request.decided_via, approval_request.decided_by) == ("link", approver.user)


def test_the_page_is_tidy_and_read_only(agent, approver, superuser_http, obtain_tokens):
    obtain_tokens(agent, approver.user, binding_message="Pay 5")
    approval_request = ApprovalRequest.objects.get(binding_message="Pay 5")

    with CaptureQueriesContext(connection) as queries:
        response = superuser_http.get(change_url(approval_request))

    html = response.content.decode()
    assert response.status_code == 200
    assert "(consumed)" not in html  # the heading names the request, not its stored status
    assert "Status now" not in html
    assert html.count("Tokens issued") >= 2  # the status field and the timeline line
    assert 'name="_save"' not in html
    # A poll request has no callback: no empty callback or notification tables.
    assert response.context["inline_admin_formsets"] == []
    assert len(queries) <= 20, len(queries)


@pytest.fixture
def endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint(hang_seconds=5) as fake:
        yield fake


def test_a_ping_requests_page_shows_each_attempt_to_reach_the_agent(make_agent, approver, endpoint, superuser_http):
    ping_agent = make_agent(
        name="Ping agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
    )
    ack = ping_agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token="callback-token-1")
    approval_request = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    factories.decide(approval_request.auth_req_id)
    notify.notification_deliver(notification_id=approval_request.notification.pk)
    endpoint.wait_for(1)

    response = superuser_http.get(change_url(approval_request))
    html = response.content.decode()

    whats = [what for _when, what, _by, _detail in timeline_rows(html)]
    assert whats == ["Created", "Approved", "Ping to the agent, attempt 1"]
    assert re.search(r"Delivered \(2xx\); HTTP 20\d; \d+ ms", html)
    assert "callback-token-1" not in html
    # Ping mode: the callback's settings are shown.
    assert [inline.formset.model.__name__ for inline in response.context["inline_admin_formsets"]] == [
        "RequestCallback",
        "Notification",
    ]


def test_tokens_are_read_only_for_a_superuser_and_lead_back_to_their_request(
    agent, make_agent, approver, superuser_http, obtain_tokens
):
    tokens = obtain_tokens(agent, approver.user, binding_message="Pay 6")
    approval_request = ApprovalRequest.objects.get(binding_message="Pay 6")
    token = token_row(tokens["access_token"])
    booker = make_agent(name="Booking agent")
    exchanged = agent.post(
        "/oauth/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": tokens["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": booker.client_id,
        },
    ).json()["access_token"]
    exchanged_token = token_row(exchanged)
    base = "/admin/oauth2_provider/accesstoken/"

    listing = superuser_http.get(base)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert f'href="{change_url(approval_request)}"' in html
    assert token.token_checksum[:12] in html
    assert token.token_checksum not in html and tokens["access_token"] not in html
    assert "revoke_tokens" not in html  # DOT's unaudited revoke action is gone
    assert 'name="_selected_action"' not in html

    page = superuser_http.get(f"{base}{token.pk}/change/")
    assert page.status_code == 200
    assert f'href="{change_url(approval_request)}"' in page.content.decode()
    assert 'name="_save"' not in page.content.decode() and 'name="scope"' not in page.content.decode()
    assert page.context["has_change_permission"] is False
    exchanged_page = superuser_http.get(f"{base}{exchanged_token.pk}/change/").content.decode()
    assert f'href="{change_url(approval_request)}"' in exchanged_page
    assert "exchanged from its token" in exchanged_page

    # Nothing changes a token here: not add, not change, not delete, not DOT's revoke action.
    assert superuser_http.get(f"{base}add/").status_code == 403
    assert superuser_http.post(f"{base}{token.pk}/change/", {"scope": "everything"}).status_code == 403
    assert superuser_http.post(f"{base}{token.pk}/delete/", {"post": "yes"}).status_code == 403
    superuser_http.post(base, {"action": "revoke_tokens", "_selected_action": [str(token.pk)]})
    assert AccessToken.objects.filter(pk=token.pk, scope=token.scope).exists()
    for model in ("refreshtoken", "idtoken"):
        assert superuser_http.get(f"/admin/oauth2_provider/{model}/add/").status_code == 403
    refresh = get_refresh_token_model().objects.get(access_token=token)
    assert (
        superuser_http.post(f"/admin/oauth2_provider/refreshtoken/{refresh.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    superuser_http.post(
        "/admin/oauth2_provider/refreshtoken/", {"action": "revoke_tokens", "_selected_action": [str(refresh.pk)]}
    )
    refresh.refresh_from_db()
    assert refresh.revoked is None


def test_the_audit_list_names_each_request(agent, make_agent, approver, superuser_http):
    shopper = make_agent(name="Shopping agent")
    first = factories.make_approval_request(approver, agent)
    second = factories.make_approval_request(approver, shopper)
    for _ in range(30):
        factories.make_approval_request(approver, agent)

    with CaptureQueriesContext(connection) as queries:
        response = superuser_http.get("/admin/approvals/auditevent/")

    html = response.content.decode()
    assert response.status_code == 200
    assert f"{first.short_id} · Travel agent → alice" in html
    assert f"{second.short_id} · Shopping agent → alice" in html
    assert "(consumed)" not in html and "(pending)" not in html
    assert re.search(TIME, html)
    assert len(queries) <= 10, len(queries)  # 32 rows, nothing per row
