"""Screenshots of the phone pages for docs/screenshots/ (375 CSS px wide, the whole page), rewritten on every run."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from approvals.devices import push_subscription_save
from approvals.links import ACR_FRESH_PASSWORD, link_url
from approvals.models import ApprovalRequest
from tests.browser.conftest import HttpAgent
from tests.fakes.push_service import FakePushService
from tests.test_rar import PAYMENT, install_example_types

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shoot(page: Page, name: str) -> Path:
    page.wait_for_load_state("networkidle")
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True, scale="css", animations="disabled", caret="hide")
    return path


def test_screenshots(page: Page, push_service: FakePushService, agent: HttpAgent, alice, server: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.context.grant_permissions(["notifications"], origin=server)

    def ask(binding_message: str, **params: str) -> ApprovalRequest:
        auth_req_id = agent.ask(scope="openid profile email", binding_message=binding_message, **params)
        return ApprovalRequest.objects.get(auth_req_id=auth_req_id)

    page.goto("/accounts/login/")
    shots = [shoot(page, "login")]

    paying = ask("Pay 420 EUR to ACME")
    page.goto(link_url(paying))
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    shots.append(shoot(page, "request-pending"))
    with page.expect_navigation():
        page.get_by_role("button", name="Approve", exact=True).tap()
    expect(page.locator("main")).to_contain_text("You approved this request.")
    shots.append(shoot(page, "request-approved"))

    install_example_types()
    invoice = ask(
        "Pay invoice 2026-118",
        authorization_details=json.dumps([{**PAYMENT, "remittanceInformationUnstructured": "Invoice 2026-118"}]),
    )
    page.goto(f"/approvals/{invoice.pk}/")
    expect(page.locator("section.details .detail-summary")).to_contain_text("Pay EUR 123.50 to Merchant A")
    shots.append(shoot(page, "request-payment"))
    with page.expect_navigation():
        page.get_by_role("button", name="Deny", exact=True).tap()

    flight = ask("Book a flight to Lisbon")
    page.goto(f"/approvals/{flight.pk}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Deny", exact=True).tap()
    expect(page.locator("main")).to_contain_text("You denied this request.")
    shots.append(shoot(page, "request-denied"))

    transfer = ask("Transfer 2,500 EUR to savings", acr_values=ACR_FRESH_PASSWORD)
    page.goto(f"/approvals/{transfer.pk}/")
    expect(page.locator("input[type=password]")).to_be_visible()
    shots.append(shoot(page, "request-step-up"))

    ask("Cancel the gym membership")
    page.goto("/approvals/")
    expect(page.locator("#requests li")).to_have_count(2)
    shots.append(shoot(page, "inbox"))

    late = ask("Renew the domain countersign.example")
    ApprovalRequest.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    page.goto(f"/approvals/{late.pk}/")
    expect(page.locator("main")).to_contain_text("expired")
    shots.append(shoot(page, "request-expired"))

    push_subscription_save(
        approver=alice,
        subscription=push_service.subscribe("phone").info,
        user_agent=page.evaluate("navigator.userAgent"),
    )
    page.goto("/approvals/devices/enrol/")
    expect(page.locator("#devices li")).to_have_count(1)
    shots.append(shoot(page, "enrol"))

    for path in shots:
        assert path.stat().st_size > 1000, path
