"""Screenshots of the phone pages (375 CSS px wide, the whole page), and of the admin's overview, request list and
one request's page on a desktop.

`make test` writes them to var/screenshots/ (ignored by git); `make screenshots` writes them to docs/screenshots/.
The server's and the browser's clocks stand still at one fixed instant, so every date and countdown on the pages is
the same on every run, and an unchanged page gives an unchanged file.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from oauthlib import common as oauthlib_common
from playwright.sync_api import Page, expect

from approvals import services
from approvals.devices import push_subscription_save
from approvals.links import ACR_FRESH_PASSWORD, link_url
from approvals.models import ApprovalRequest, Delivery
from authz.models import NotificationAttempt, RequestCallback
from tests import factories, prompting
from tests.authz.test_admin_timeline import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, timeline_rows
from tests.authz.tokens.test_rar import PAYMENT, install_example_types
from tests.browser.conftest import PASSWORD, PHONE_USER_AGENT, HttpAgent, sign_in
from tests.fakes.agent_endpoint import FakeAgentEndpoint
from tests.fakes.push_service import FakePushService
from tests.fakes.twilio import FakeTwilio

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


# --- The admin's request list and one request's timeline (issue 18) ---------------------------------------------------

# The width issue 18 measured the request list against: its columns beside the filters, none pushed off the page.
WIDE_DESKTOP = {**DESKTOP, "viewport": {"width": 1400, "height": 900}}
# How long the fake SMS provider takes to answer, on the frozen clock (a real provider takes that long or more).
SMS_LATENCY = timedelta(milliseconds=420)
# The only figure the flow measures on the real (monotonic) clock, the agent's answer to its ping, made repeatable.
PING_LATENCY_MS = 38
# The ping agent's callback URL as the request's page shows it (a real agent's, not the fake's port of the moment).
PING_ENDPOINT = "https://travel-agent.example/ciba/ping"


def today_at(hour: int, minute: int, second: int) -> datetime:
    """A time on the morning of the screenshots (SHOT_AT is 09:30 UTC)."""
    return SHOT_AT.replace(hour=hour, minute=minute, second=second)


class TwilioTakingTime(FakeTwilio):
    """The fake Twilio, answering SMS_LATENCY later on the frozen clock: a prompt's delivery attempt then starts
    before "Prompt sent" and takes that long, on every run (with the clock standing still both would share one
    instant, and the timeline would put "Prompt sent" first)."""

    def __init__(self, clock: time_machine.Traveller) -> None:
        self.clock = clock
        super().__init__()

    def _record(self, name: str, item: Any) -> None:
        if name == "attempts":  # in the fake's handler thread, before it answers
            self.clock.shift(SMS_LATENCY)
        super()._record(name, item)


@pytest.mark.django_db(transaction=True, reset_sequences=True)  # ids the pages show (tokens) count from 1 each run
def test_admin_requests_screenshots(
    browser, page: Page, server: str, settings, vapid_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approval request list over one morning, every way a request ends, and the page of the one request that
    went the whole way: asked by a ping agent, prompted by SMS, approved with the prompt's link, pinged, redeemed,
    refreshed, exchanged for another agent and revoked. Made over HTTP (the agents at the live server, the person in
    the browser) and through the services the admin and the person's page call, at times of its own."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    repeatable_randomness(monkeypatch)
    with (
        time_machine.travel(today_at(8, 0, 0), tick=False) as clock,
        TwilioTakingTime(clock) as twilio,
        FakePushService(expected_vapid_public_key=vapid_keys[1]) as push,
        FakeAgentEndpoint() as endpoint,
    ):
        # Web Push where the person has a device, SMS otherwise (the server's order).
        prompting.configure(
            settings,
            [prompting.WEBPUSH, prompting.SMS],
            TWILIO=prompting.twilio_config(settings, twilio),
            WEBPUSH=prompting.webpush_config(settings, vapid_keys),
            PROMPT_TIMEOUT_SECONDS=5,
        )
        flight = make_a_morning_of_requests(clock, page, server, twilio, push, endpoint)
        clock.move_to(SHOT_AT)
        get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
        context = browser.new_context(**WIDE_DESKTOP, base_url=server, timezone_id="UTC")
        try:
            admin = context.new_page()
            admin.set_default_timeout(10_000)
            admin.clock.set_fixed_time(SHOT_AT)
            refused: list[str] = []
            admin.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
            admin.goto("/admin/login/?next=/admin/approvals/approvalrequest/")
            sign_in(admin, "admin")
            expect(admin.locator("#result_list tbody tr")).to_have_count(9)
            expect(admin.locator("#result_list")).to_contain_text("none: prompt failed")
            shots = [shoot(admin, "admin-requests")]
            # All nine columns on the page: the table needs no scrolling sideways at 1400 px.
            assert admin.evaluate("() => (r => r.scrollWidth <= r.clientWidth)(document.querySelector('.results'))")

            admin.goto(f"/admin/approvals/approvalrequest/{flight.pk}/change/")
            rows = timeline_rows(admin.content())
            assert [what for _when, what, _by, _detail in rows] == [
                "Created",
                "Prompt attempt 1: sms",
                "Prompt sent",
                "Prompt's link opened",
                "Approved",
                "Ping to the agent, attempt 1",
                "Tokens issued",
                "Tokens refreshed",
                "Tokens exchanged",
                "Tokens revoked",
            ]
            assert rows[1][3] == "to sms:+14155550124: Accepted by the provider; 420 ms"
            shots.append(shoot(admin, "admin-request-timeline"))
            assert [text for text in refused if "favicon" not in text and "404" not in text] == [], refused
        finally:
            context.close()
    for path in shots:
        assert path.stat().st_size > 1000, path


def repeatable_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random values the pages show, drawn from seeded generators instead: request ids (a request's page shows
    its id) and token values (the timeline names tokens by their checksum's prefix). Any values would do; these are
    the same on every run."""
    ids = random.Random(18)
    monkeypatch.setattr(
        ApprovalRequest._meta.pk, "_get_default", lambda: uuid.UUID(int=ids.getrandbits(128), version=4)
    )
    tokens = random.Random(1400)

    # oauthlib's random_token_generator calls oauthlib.common.generate_token for access and refresh tokens.
    def generate_token(length: int = 30, chars: str = oauthlib_common.UNICODE_ASCII_CHARACTER_SET) -> str:
        return "".join(tokens.choice(chars) for _ in range(length))

    monkeypatch.setattr(oauthlib_common, "generate_token", generate_token)


def make_a_morning_of_requests(
    clock: time_machine.Traveller,
    phone: Page,
    server: str,
    twilio: FakeTwilio,
    push: FakePushService,
    endpoint: FakeAgentEndpoint,
) -> ApprovalRequest:
    """Four agents (one of them a ping agent), four people and an operator; nine requests from 08:02 to 09:21, ended
    every way one ends: approved on the signed-in page and with the prompt's link, denied, cancelled by an operator,
    expired undecided, never delivered (the SMS provider refused the number), one still pending; prompts by Web Push
    (ada has a phone enrolled) or SMS. Returns the ping agent's request, whose whole story the timeline shows."""
    agents: dict[str, HttpAgent] = {}

    def agent(name: str, **ciba: Any) -> HttpAgent:
        application, secret = factories.make_agent_client(name=name, **ciba)
        client_id = name.lower().replace(" ", "-")  # a client_id of its own: the pages show it
        type(application).objects.filter(pk=application.pk).update(client_id=client_id)
        application.refresh_from_db()
        agents[name] = HttpAgent(server, client_id, secret, application)
        return agents[name]

    def at(hour: int, minute: int, second: int) -> None:
        clock.move_to(today_at(hour, minute, second))

    def ask(by: HttpAgent, person: str, binding_message: str, **params: str) -> ApprovalRequest:
        auth_req_id = by.ask(login_hint=person, scope="openid profile", binding_message=binding_message, **params)
        asked = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
        # The prompt task runs once bc-authorize commits, before it answers.
        assert asked.prompted_at or asked.prompt_failed_at, asked
        return asked

    def decide(request: ApprovalRequest, *, approve: bool = True, by_link: bool = False) -> None:
        # What the person's page (signed in, or opened with the prompt's link) calls.
        assert services.approval_request_decide(
            approval_request_id=request.pk, user=request.user, approve=approve, by_link=by_link
        )

    def redeem(by: HttpAgent, request: ApprovalRequest) -> dict[str, Any]:
        answer = by.poll(request.auth_req_id)
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        return tokens

    travel = agent(
        "Travel agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
    )
    expenses = agent("Expense bot")
    calendar = agent("Calendar assistant")
    booking = agent("Booking agent")
    ada = factories.make_approver("ada", email="ada@example.com", phone="+14155550123")
    for name, phone_number in (("ben", "+14155550124"), ("chloe", "+14155550125"), ("dan", "+14155550126")):
        factories.make_approver(name, email=f"{name}@example.com", phone=phone_number)
    push_subscription_save(approver=ada, subscription=push.subscribe("ada").info, user_agent=PHONE_USER_AGENT)
    olga = factories.make_staff("olga", "operator")
    try:
        at(8, 2, 11)
        report = ask(expenses, "ben", "Expense report May 2026: 312.40 EUR")
        at(8, 3, 2)
        decide(report)
        at(8, 3, 5)
        redeem(expenses, report)

        at(8, 17, 40)
        meeting = ask(calendar, "ada", "Accept: Acme kick-off, 3 June 14:00")
        at(8, 17, 58)
        decide(meeting, by_link=True)
        at(8, 18, 1)
        redeem(calendar, meeting)

        at(8, 31, 5)
        # An hour to decide: a denied request reads "Expired" once its lifetime is over, as its agent sees it.
        hotel = ask(booking, "chloe", "Hotel Lisboa Plaza, 2 nights, 318 EUR", requested_expiry="3600")
        at(8, 32, 20)
        decide(hotel, approve=False)
        at(8, 32, 24)
        assert booking.poll(hotel.auth_req_id).json()["error"] == "access_denied"

        at(8, 40, 12)
        twilio.respond_with("invalid_number")
        ask(expenses, "dan", "Reimburse taxi fare 42.00 EUR", requested_expiry="300")

        at(8, 48, 30)
        ask(calendar, "ben", "Move the team stand-up to 10:00", requested_expiry="300")

        at(8, 55, 12)
        table = ask(booking, "ada", "Table for 4 at Casa Nova, 20:00")
        at(9, 2, 41)
        assert services.approval_request_cancel(approval_request_id=table.pk, actor=olga)  # the admin's action

        at(9, 5, 33)
        sharing = ask(calendar, "chloe", "Share your June calendar with Acme")
        at(9, 6, 10)
        decide(sharing, by_link=True)
        at(9, 6, 13)
        redeem(calendar, sharing)

        flight = whole_story(travel, booking, phone, endpoint, at, ask)

        at(9, 21, 47)
        ask(expenses, "chloe", "Purchase order PO-7731: 1,240.00 EUR", requested_expiry="600")

        at(9, 29, 0)
        assert services.approval_request_expire_due() == 2  # what the sweeper, run every minute, does
        return flight
    finally:
        for each in agents.values():
            each.http.close()


def whole_story(
    travel: HttpAgent,
    booking: HttpAgent,
    phone: Page,
    endpoint: FakeAgentEndpoint,
    at: Callable[[int, int, int], None],
    ask: Callable[..., ApprovalRequest],
) -> ApprovalRequest:
    """The request the timeline shows, as in tests/authz/test_admin_timeline.py's full flow, over HTTP at the live
    server: the ping agent asks; ben gets the SMS, opens its link on his phone and approves; the agent is pinged,
    redeems, refreshes, exchanges the new access token for the booking agent, and later revokes it."""
    at(9, 14, 5)
    flight = ask(travel, "ben", "Book flight LH 1172 FRA-LIS, 1 June", client_notification_token="ping-secret-1")
    at(9, 14, 19)
    phone.clock.set_fixed_time(today_at(9, 14, 19))
    phone.goto(link_url(flight))
    approve = phone.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_visible()
    at(9, 14, 26)
    with phone.expect_navigation():
        approve.tap()
    expect(phone.locator("main")).to_contain_text("You approved this request.")
    endpoint.wait_for(1)
    NotificationAttempt.objects.filter(notification__request=flight).update(latency_ms=PING_LATENCY_MS)
    # The page shows where the agent is called back; the fake's address has a new port on every run.
    RequestCallback.objects.filter(request=flight).update(endpoint=PING_ENDPOINT)
    at(9, 14, 27)
    redeemed = travel.poll(flight.auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    at(9, 24, 30)
    refreshed = travel.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    at(9, 24, 31)
    exchanged = travel.post(
        "/oauth/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": refreshed.json()["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": booking.client_id,
        },
    )
    assert exchanged.status_code == 200, exchanged.text
    at(9, 27, 2)
    assert travel.post("/oauth/revoke/", {"token": refreshed.json()["access_token"]}).status_code == 200
    return flight
