"""Issue 15 item 7a: no page or JSON answer that shows an approval request may be kept by a browser or a proxy
cache (a shared phone's back button, a corporate proxy): every approvals URL answers Cache-Control: no-store
(approvals.middleware.NoStoreMiddleware)."""

from __future__ import annotations

import pytest
from django.test import Client

from approvals.links import link_url
from approvals.models import ApprovalRequest
from tests import prompting

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(approver) -> ApprovalRequest:
    return prompting.make_request(approver)


def no_store(response) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_the_request_page_is_not_stored(approver_client: Client, pending: ApprovalRequest) -> None:
    response = approver_client.get(f"/approvals/{pending.pk}/")

    assert response.status_code == 200
    assert no_store(response)


def test_the_inbox_and_its_json_are_not_stored(approver_client: Client, pending: ApprovalRequest) -> None:
    for path in ("/approvals/", "/approvals/pending.json"):
        response = approver_client.get(path)
        assert response.status_code == 200, path
        assert no_store(response), path


def test_the_link_redirect_and_the_page_it_leads_to_are_not_stored(pending: ApprovalRequest) -> None:
    http = Client()
    url = link_url(pending)

    response = http.get(url[url.index("/approvals/") :])

    assert response.status_code == 302
    assert no_store(response)
    page = http.get(response["Location"])
    assert page.status_code == 200 and no_store(page)


def test_a_refusal_is_not_stored_either(approver_client: Client) -> None:
    response = approver_client.get("/approvals/l/not-a-token/")

    assert response.status_code in (404, 429)
    assert no_store(response)
