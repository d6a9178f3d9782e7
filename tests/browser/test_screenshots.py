"""Screenshots of the phone pages (375 CSS px wide, the whole page).

`make test` writes them to var/screenshots/ (ignored by git); `make screenshots` writes them to docs/screenshots/.
The server's and the browser's clocks stand still at one fixed instant, so every date and countdown on the pages is
the same on every run, and an unchanged page gives an unchanged file.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import Page, expect

from approvals.devices import push_subscription_save
from approvals.links import ACR_FRESH_PASSWORD, link_url
from approvals.models import ApprovalRequest
from tests.authz.tokens.test_rar import PAYMENT, install_example_types
from tests.browser.conftest import HttpAgent, sign_in
from tests.fakes.push_service import FakePushService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("COUNTERSIGN_SCREENSHOTS_DIR", "var/screenshots")
# The instant every screenshot is taken at, on the server and in the browser.
SHOT_AT = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)


def shoot(page: Page, name: str) -> Path:
    page.wait_for_load_state("networkidle")
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True, scale="css", animations="disabled", caret="hide")
    return path


@pytest.mark.browser_context_args(timezone_id="UTC")
def test_screenshots(page: Page, push_service: FakePushService, agent: HttpAgent, alice, server: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.context.grant_permissions(["notifications"], origin=server)
    # tick=False: timestamps written during the run all equal SHOT_AT; Playwright and the servers' socket timeouts
    # use the monotonic clock, which time_machine leaves alone.
    with time_machine.travel(SHOT_AT, tick=False):
        page.clock.set_fixed_time(SHOT_AT)
        take_screenshots(page, push_service, agent, alice)


def take_screenshots(page: Page, push_service: FakePushService, agent: HttpAgent, alice) -> None:

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

    # Holding a link is the session level: approving at the higher level asks for the password.
    transfer = ask("Transfer 2,500 EUR to savings", acr_values=ACR_FRESH_PASSWORD)
    page.goto(link_url(transfer))
    expect(page.locator("input[type=password]")).to_be_visible()
    shots.append(shoot(page, "request-step-up"))

    # A link signs no one in: the other pages need a real sign-in.
    page.goto("/accounts/login/")
    sign_in(page, "alice")
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
