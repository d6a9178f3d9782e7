"""Issue 15, finding 4: the inbox and pending.json are paged, so what a phone refreshes every 5 s stays small however
many requests a person has waiting; no page parameter makes them fail."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals.selectors import INBOX_PAGE_SIZE
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def many_pending(approver, agent):
    made = [
        factories.make_approval_request(approver, agent, binding_message=f"Order {n}", created_ago=60 - n)
        for n in range(45)
    ]
    return list(reversed(made))  # newest first, as the inbox shows them


def test_pending_json_answers_one_page_at_a_time(approver_client, many_pending):
    first = approver_client.get("/approvals/pending.json").json()
    second = approver_client.get("/approvals/pending.json?page=2").json()
    last = approver_client.get("/approvals/pending.json?page=3").json()

    assert [r["id"] for r in first["requests"]] == [str(r.pk) for r in many_pending[:INBOX_PAGE_SIZE]]
    assert [r["id"] for r in second["requests"]] == [
        str(r.pk) for r in many_pending[INBOX_PAGE_SIZE : 2 * INBOX_PAGE_SIZE]
    ]
    assert len(last["requests"]) == 45 - 2 * INBOX_PAGE_SIZE
    assert (first["count"], first["page"], first["pages"]) == (45, 1, 3)


def test_the_inbox_page_shows_one_page_and_links_the_others(approver_client, many_pending):
    html = approver_client.get("/approvals/").content.decode()

    assert html.count('class="request-card"') == INBOX_PAGE_SIZE
    assert "Order 44" in html and "Order 0" not in html  # newest first
    assert 'href="?page=2" rel="next"' in html
    assert f"1-{INBOX_PAGE_SIZE} of 45" in html

    second = approver_client.get("/approvals/?page=2").content.decode()
    assert 'rel="prev"' in second and 'data-pending-url="/approvals/pending.json?page=2"' in second


@pytest.mark.parametrize("page", ["0", "-1", "999999999999999999999", "abc", "1e3", "", "%ff", "2.5"])
def test_any_page_parameter_gives_a_page(approver_client, many_pending, page):
    for path in ("/approvals/pending.json", "/approvals/"):
        response = approver_client.get(path, {"page": page})
        assert response.status_code == 200, (path, page)


def test_the_cost_of_a_refresh_does_not_grow_with_what_is_pending(approver_client, approver, agent, many_pending):
    with CaptureQueriesContext(connection) as few:
        small = approver_client.get("/approvals/pending.json?page=3")
    with CaptureQueriesContext(connection) as many:
        full = approver_client.get("/approvals/pending.json")

    assert len(many.captured_queries) == len(few.captured_queries)
    assert len(full.content) < 16 * 1024, len(full.content)
    assert small.status_code == 200
