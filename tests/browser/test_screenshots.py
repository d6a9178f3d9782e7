"""Screenshots of the phone pages (375 CSS px wide, the whole page), and of the admin's overview on a desktop.

`make test` writes them to var/screenshots/ (ignored by git); `make screenshots` writes them to docs/screenshots/.
The server's and the browser's clocks stand still at one fixed instant, so every date and countdown on the pages is
the same on every run, and an unchanged page gives an unchanged file.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import Page, expect

from approvals import services
from approvals.devices import push_subscription_save
from approvals.links import ACR_FRESH_PASSWORD, link_url
from approvals.models import ApprovalRequest, Delivery
from tests import factories
from tests.authz.tokens.test_rar import PAYMENT, install_example_types
from tests.browser.conftest import PASSWORD, HttpAgent, sign_in
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


# --- The admin's overview (issue 18) ----------------------------------------------------------------------------------

DESKTOP = {"viewport": {"width": 1280, "height": 800}, "device_scale_factor": 1, "locale": "en-US"}


def test_admin_overview_screenshot(browser, server: str) -> None:
    """The overview page on a desktop, over a week of requests made the same way on every run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with time_machine.travel(SHOT_AT, tick=False):
        make_a_week_of_requests(SHOT_AT)
        get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
        context = browser.new_context(**DESKTOP, base_url=server, timezone_id="UTC")
        try:
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.clock.set_fixed_time(SHOT_AT)
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
            # Chromium asks for /favicon.ico, which the admin does not name (a 404 the console reports too).
            missing: list[str] = []
            page.on("response", lambda r: missing.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
            page.goto("/admin/login/?next=/admin/review/overview/")
            sign_in(page, "admin")
            expect(page.locator("h1")).to_have_text("Overview")
            expect(page.locator("svg.review-chart")).to_have_count(2)
            path = shoot(page, "admin-overview")
            # The page keeps the site's Content-Security-Policy: the browser refused nothing, and found everything.
            assert [text for text in refused if "favicon" not in text and "404" not in text] == [], refused
            assert missing == []
        finally:
            context.close()
    assert path.stat().st_size > 1000, path


def make_a_week_of_requests(now: datetime) -> None:
    """A week of traffic for the overview's screenshot, the same on every run: six agents, three people, a daily
    rhythm; most requests approved within a minute and redeemed, some denied, some left to expire, a few cancelled;
    prompts by SMS or Web Push, a few of them failing. Made through approvals' services at their own times; prompt
    deliveries are written as the prompt task would, in the same transaction, so that no prompt is sent now."""
    rng = random.Random(18)
    agents = []
    for name in ("Travel agent", "Expense bot", "Calendar assistant", "Payroll bot", "Support copilot", "Invoices"):
        application = factories.make_agent_client(name=name)[0]
        # A client_id of its own (the page shows it), the same on every run.
        type(application).objects.filter(pk=application.pk).update(client_id=name.lower().replace(" ", "-"))
        agents.append(application)
    weights = [9, 6, 4, 3, 2, 1]
    people = [factories.make_approver(name) for name in ("ada", "ben", "chloe")]
    Status = ApprovalRequest.Status
    with transaction.atomic():
        for hours_ago in range(7 * 24, -1, -1):
            hour = now - timedelta(hours=hours_ago)
            daytime = 8 <= hour.hour < 20
            for _ in range(rng.randint(4, 12) if daytime else rng.randint(0, 3)):
                created = hour - timedelta(seconds=rng.randint(0, 3599))
                if created > now - timedelta(minutes=1):
                    continue
                person = rng.choice(people)
                r = services.approval_request_create(
                    client=rng.choices(agents, weights)[0], user=person.user, scope="openid",
                    hint_type="login_hint", now=created, **factories.as_bc_authorize(),
                )  # fmt: skip
                channel = "sms" if rng.random() < 0.55 else "webpush"
                attempts = [Delivery.Status.SENT]
                if rng.random() < 0.08:
                    attempts = [Delivery.Status.FAILED, Delivery.Status.SENT]
                if rng.random() < 0.03:
                    attempts = [Delivery.Status.FAILED, Delivery.Status.REJECTED]
                for n, status in enumerate(attempts, start=1):
                    at = created + timedelta(seconds=n * 2)
                    Delivery.objects.create(
                        request=r, channel=channel, destination=f"{channel}:{person.pk}", attempt=n, status=status,
                        created_at=at, updated_at=at, finished_at=at,
                    )  # fmt: skip
                reached = attempts[-1] == Delivery.Status.SENT
                prompted = created + timedelta(seconds=2 * len(attempts))
                ApprovalRequest.objects.filter(pk=r.pk).update(
                    prompted_at=prompted if reached else None,
                    prompt_channel=channel if reached else "",
                    prompt_failed_at=None if reached else prompted,
                )
                if not reached or created > now - timedelta(minutes=3):
                    continue  # never reached anybody, or still waiting for its person
                outcome = rng.random()
                decided = created + timedelta(seconds=round(rng.lognormvariate(3.0, 0.8)) + 3)
                if outcome < 0.70:
                    services.approval_request_decide(
                        approval_request_id=r.pk, user=person.user, approve=True, now=decided,
                        by_link=rng.random() < 0.5,
                    )  # fmt: skip
                    if rng.random() < 0.97:
                        services.approval_request_consume(approval_request_id=r.pk, now=decided + timedelta(seconds=3))
                elif outcome < 0.84:
                    services.approval_request_decide(
                        approval_request_id=r.pk, user=person.user, approve=False, now=decided
                    )
                elif outcome < 0.87:
                    services.approval_request_cancel(approval_request_id=r.pk, actor=None, now=decided)
        services.approval_request_expire_due(now=now)
    assert ApprovalRequest.objects.filter(status=Status.CONSUMED).exists()
