"""A payment described with RFC 9396 authorization_details, as the approver sees it on a phone: the type's own
summary ("Pay EUR 123.50 to Merchant A, ..."), approved with one tap; the tokens carry what was approved."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from approvals.models import ApprovalRequest
from tests.authz.tokens.test_rar import PAYMENT, install_example_types
from tests.browser.conftest import BrowserErrors, HttpAgent, wait_for_prompt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_approver_sees_the_payment_summary_and_approves_it(
    page: Page, browser_errors: BrowserErrors, agent: HttpAgent, alice, server: str
) -> None:
    install_example_types()
    payment = {**PAYMENT, "remittanceInformationUnstructured": "Invoice <b>42</b>"}
    auth_req_id = agent.ask(binding_message="Order 42", authorization_details=json.dumps([payment]))
    prompt = wait_for_prompt()

    response = page.goto(prompt.link)
    assert response is not None and response.status == 200

    details = page.locator("section.details")
    expect(details.get_by_role("heading", name="Payment")).to_be_visible()
    summary = details.locator(".detail-summary")
    expect(summary).to_have_text("Pay EUR 123.50 to Merchant A, reference Invoice <b>42</b>")
    expect(summary.locator("strong").first).to_have_text("EUR 123.50")
    expect(summary.locator("b")).to_have_count(0)  # the agent's markup is text, not markup
    # Each of the agent's values is boxed as data, apart from the page's own words (approvals.display).
    expect(summary.locator(".data-value")).to_have_text(["EUR", "123.50", "Merchant A", "Invoice <b>42</b>"])
    box = summary.locator(".data-value", has_text="Merchant A")
    assert box.evaluate("e => getComputedStyle(e).borderTopStyle") == "solid"
    expect(details.locator(".detail-row", has_text="IBAN")).to_contain_text("DE02100100109307118603")
    expect(details.locator(".detail-row", has_text="The agent may")).to_contain_text("initiate, status")
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_visible()

    with page.expect_navigation():
        approve.tap()

    expect(page.locator("main")).to_contain_text("You approved this request.")
    expect(summary).to_have_text("Pay EUR 123.50 to Merchant A, reference Invoice <b>42</b>")
    assert ApprovalRequest.objects.get(auth_req_id=auth_req_id).status == ApprovalRequest.Status.APPROVED
    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["authorization_details"] == [payment]
    assert browser_errors.all() == []  # no CSP violation, no script error
