"""Issue 18 item 3: each agent's figures in the application list and on its page (requests, approval rate, median
time to decision, prompt failures over 30 days, last request), whether its name and website are verified, with one
query for the figures of a whole page."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import get_application_model

from approvals import services
from approvals.display import admin_datetime
from approvals.models import ApprovalRequest
from authz.models import CibaClient
from authz.review.agents import agent_stats
from tests import factories

pytestmark = pytest.mark.django_db

APPLICATIONS = "/admin/oauth2_provider/application/"
Application = get_application_model()
COLUMNS = ("agent_state", "identity", "requests_30d", "approval_rate", "median_decision", "prompt_failures")


def viewer_client() -> Client:
    http = Client()
    http.force_login(factories.make_staff("watcher", "viewer"))
    return http


def row_of(page: str, name: str) -> dict[str, str]:
    """The listed agent's cells, by column."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        if f">{name}<" in row:
            cells = re.findall(r'<td class="field-([a-z_0-9]+)[^"]*">(.*?)</td>', row, flags=re.S)
            return {column: html.unescape(re.sub(r"<[^>]+>", "", value)).strip() for column, value in cells}
    raise AssertionError(f"{name} is not listed")


def decided(approver: Any, agent: Any, *, ago: int, after: int, approve: bool) -> ApprovalRequest:
    request = factories.make_approval_request(approver, agent, created_ago=ago)
    assert services.approval_request_decide(
        approval_request_id=request.pk,
        user=approver.user,
        approve=approve,
        now=request.created_at + timedelta(seconds=after),
    )
    return request


@pytest.fixture
def busy(make_agent, approver) -> Any:
    """An agent with every kind of request in the window, and one older than it."""
    agent = make_agent(name="Busy agent")
    consumed = decided(approver, agent, ago=100, after=10, approve=True)
    assert services.approval_request_consume(approval_request_id=consumed.pk)
    # Approved, never redeemed, then swept: its status says expired, the decision was an approval.
    decided(approver, agent, ago=400, after=20, approve=True)
    assert services.approval_request_expire_due() == 1
    decided(approver, agent, ago=200, after=30, approve=False)
    cancelled = factories.make_approval_request(approver, agent, created_ago=50)
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=None)
    failed = factories.make_approval_request(approver, agent)
    ApprovalRequest.objects.filter(pk=failed.pk).update(prompt_failed_at=timezone.now())
    # Outside the 30 days: counted nowhere but it is not the last request either.
    old = factories.make_approval_request(approver, agent, created_ago=40 * 86400)
    ApprovalRequest.objects.filter(pk=old.pk).update(status=ApprovalRequest.Status.EXPIRED)
    agent.last = failed
    return agent


def test_the_list_shows_each_agents_figures(busy, make_agent, approver):
    quiet = make_agent(name="Quiet agent")
    long_ago = factories.make_approval_request(approver, quiet, created_ago=40 * 86400)
    make_agent(name="New agent")

    page = viewer_client().get(APPLICATIONS).content.decode()

    assert {k: row_of(page, "Busy agent")[k] for k in COLUMNS} == {
        "agent_state": "active",
        "identity": "not verified (added by staff)",
        "requests_30d": "5",
        "approval_rate": "66.7 % of 3",
        "median_decision": "20 s",
        "prompt_failures": "1",
    }
    assert row_of(page, "Busy agent")["last_request"] == admin_datetime(busy.last.created_at)
    assert {k: row_of(page, "Quiet agent")[k] for k in COLUMNS[2:]} == {
        "requests_30d": "0",
        "approval_rate": "-",
        "median_decision": "-",
        "prompt_failures": "0",
    }
    assert row_of(page, "Quiet agent")["last_request"] == admin_datetime(long_ago.created_at)
    assert row_of(page, "New agent")["last_request"] == "-"


def test_the_median_is_percentile_cont_over_the_window(make_agent, approver):
    agent = make_agent(name="Even agent")
    for after in (4, 10, 30, 100):
        decided(approver, agent, ago=200, after=after, approve=True)

    stats = agent_stats([agent.application.pk])[agent.application.pk]

    assert stats.median_decision == timedelta(seconds=20)  # between 10 and 30, as percentile_cont interpolates
    assert (stats.requests, stats.decided, stats.approved) == (4, 4, 4)


def test_verified_and_self_registered_agents_are_told_apart(make_agent):
    make_agent(name="Checked agent", website="https://checked.example", website_verified=True)
    registered = make_agent(name="Registered agent")
    Application.objects.filter(pk=registered.application.pk).update(
        registration_source=Application.RegistrationSource.DCR
    )

    page = viewer_client().get(APPLICATIONS).content.decode()

    assert row_of(page, "Checked agent")["identity"] == "verified"
    assert row_of(page, "Registered agent")["identity"] == "unverified (registered itself)"


@pytest.mark.postgres
def test_the_figures_cost_the_same_queries_for_3_agents_as_for_12(make_agent, approver):
    http = viewer_client()
    http.get(APPLICATIONS)  # session and permission caches warm

    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = http.get(APPLICATIONS)
        assert response.status_code == 200
        return len(queries.captured_queries)

    for n in range(3):
        decided(approver, make_agent(name=f"Agent {n}"), ago=100, after=5, approve=True)
    few = queries_for_page()
    for n in range(3, 12):
        decided(approver, make_agent(name=f"Agent {n}"), ago=100, after=5, approve=n % 2 == 0)
    many = queries_for_page()

    assert many == few
    # One aggregate over the requests for all the page's agents.
    with CaptureQueriesContext(connection) as queries:
        http.get(APPLICATIONS)
    grouped = [
        q["sql"] for q in queries.captured_queries if "GROUP BY" in q["sql"] and "approvals_approvalrequest" in q["sql"]
    ]
    assert len(grouped) == 1
    assert "PERCENTILE_CONT" in grouped[0]


def test_the_agent_page_shows_its_figures_and_state(busy):
    page = viewer_client().get(f"{APPLICATIONS}{busy.application.pk}/change/")
    text = page.content.decode()
    assert page.status_code == 200
    assert (
        "5 requests, 3 decided by a person, approval rate 66.7 %, median time to decision 20 s, 1 prompt failures"
        in text
    )
    assert "Active: it may make requests." in text
    # A viewer reads the CIBA settings and changes nothing.
    assert 'name="_save"' not in text
    assert CibaClient.objects.filter(pk=busy.application.pk).exists()
