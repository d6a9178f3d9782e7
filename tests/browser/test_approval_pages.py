"""The approver's pages on a phone: open the prompt's link, check the request, tap Approve or Deny.

The agent speaks to the live server over HTTP; the approver is Chromium with a phone's viewport and touch.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from approvals.devices import push_subscription_save
from approvals.links import ACR_FRESH_PASSWORD, ACR_SESSION
from approvals.models import ApprovalRequest
from tests.browser.conftest import (
    PASSWORD,
    BrowserErrors,
    HttpAgent,
    id_token_claims,
    sign_in,
    wait_for_prompt,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = ApprovalRequest.Status
BINDING = "Pay 420 EUR to ACME"


def request_for(auth_req_id: str) -> ApprovalRequest:
    return ApprovalRequest.objects.get(auth_req_id=auth_req_id)


def approve_button(page: Page):
    return page.get_by_role("button", name="Approve", exact=True)


def deny_button(page: Page):
    return page.get_by_role("button", name="Deny", exact=True)


def tap_and_wait(page: Page, locator) -> None:
    """Tap a submit button (touch, as on a phone) and wait for the page it leads to."""
    with page.expect_navigation():
        locator.tap()


def test_approve_from_the_prompt_link(page: Page, agent: HttpAgent, alice, server: str) -> None:
    auth_req_id = agent.ask(binding_message=BINDING)
    prompt = wait_for_prompt()
    assert prompt.link.startswith(f"{server}/approvals/l/"), prompt.link

    response = page.goto(prompt.link)
    assert response is not None and response.status == 200
    assert "/approvals/l/" not in page.url, page.url  # the token leaves the address bar
    main = page.locator("main")
    expect(main).to_contain_text("Travel agent")
    expect(main).to_contain_text(BINDING)
    expect(approve_button(page)).to_be_visible()
    expect(deny_button(page)).to_be_visible()

    tap_and_wait(page, approve_button(page))

    expect(main).to_contain_text(re.compile(r"you approved this request", re.I))
    expect(approve_button(page)).to_have_count(0)
    expect(deny_button(page)).to_have_count(0)
    assert request_for(auth_req_id).status == Status.APPROVED

    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["access_token"] and body["id_token"], body
    claims = id_token_claims(body)
    assert claims["acr"] == ACR_SESSION, claims

    # The link decided its one request and signed no one in: the list of requests needs a real sign-in.
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    page.goto("/approvals/")
    assert "/accounts/login/" in page.url, page.url


def test_deny_from_the_prompt_link(page: Page, agent: HttpAgent, alice) -> None:
    auth_req_id = agent.ask(binding_message=BINDING)
    page.goto(wait_for_prompt().link)
    expect(page.locator("main")).to_contain_text(BINDING)

    tap_and_wait(page, deny_button(page))

    expect(page.locator("main")).to_contain_text(re.compile(r"you denied this request", re.I))
    expect(approve_button(page)).to_have_count(0)
    assert request_for(auth_req_id).status == Status.DENIED

    answer = agent.poll(auth_req_id)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "access_denied"


def test_expired_request_says_so_and_offers_no_buttons(page: Page, agent: HttpAgent, alice) -> None:
    auth_req_id = agent.ask(binding_message=BINDING)
    link = wait_for_prompt().link
    ApprovalRequest.objects.filter(auth_req_id=auth_req_id).update(expires_at=timezone.now() - timedelta(seconds=1))

    page.goto(link)
    # An expired link no longer signs anyone in: the login form, then the request itself.
    assert "/accounts/login/" in page.url, page.url
    sign_in(page, "alice")
    approval_request = request_for(auth_req_id)
    assert page.url.endswith(f"/approvals/{approval_request.pk}/"), page.url

    main = page.locator("main")
    expect(main).to_contain_text(re.compile(r"expired", re.I))
    expect(main).to_contain_text(BINDING)
    expect(approve_button(page)).to_have_count(0)
    expect(deny_button(page)).to_have_count(0)
    expect(page.locator("input[type=password]")).to_have_count(0)


def test_another_persons_link_is_not_found(page: Page, agent: HttpAgent, alice, bob, signed_in) -> None:
    auth_req_id = agent.ask(login_hint="alice", binding_message=BINDING)
    link = wait_for_prompt().link
    signed_in("bob")

    response = page.goto(link)

    assert response is not None and response.status == 404
    expect(page.locator("body")).not_to_contain_text(BINDING)
    expect(approve_button(page)).to_have_count(0)
    approval_request = request_for(auth_req_id)
    assert approval_request.status == Status.PENDING
    assert approval_request.link_used_at is None


def test_decision_without_csrf_token_is_refused(page: Page, agent: HttpAgent, alice, signed_in, server: str) -> None:
    auth_req_id = agent.ask(binding_message=BINDING)
    approval_request = request_for(auth_req_id)
    decide = f"{server}/approvals/{approval_request.pk}/decide/"
    signed_in("alice")
    page.goto(f"/approvals/{approval_request.pk}/")
    expect(approve_button(page)).to_be_visible()

    # 1. With the signed-in browser's cookies but no token.
    forged = page.request.post(decide, form={"decision": "approve"}, max_redirects=0)
    assert forged.status == 403, forged.text()

    # 2. A page on another site that posts a form to the decision URL.
    page.route(
        "http://evil.example/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=(
                f'<form id="f" method="post" action="{decide}">'
                '<input name="decision" value="approve"></form>'
                "<script>document.getElementById('f').submit()</script>"
            ),
        ),
    )
    with page.expect_response(decide) as answer:
        page.goto("http://evil.example/win-a-prize")
    assert answer.value.status == 403

    assert request_for(auth_req_id).status == Status.PENDING


def test_signed_out_approver_signs_in_and_lands_on_the_request(page: Page, agent: HttpAgent, alice) -> None:
    auth_req_id = agent.ask(binding_message=BINDING)
    approval_request = request_for(auth_req_id)
    detail = f"/approvals/{approval_request.pk}/"

    page.goto(detail)
    assert "/accounts/login/" in page.url and "next=" in page.url, page.url
    expect(page.locator("input[name=password]")).to_be_visible()

    sign_in(page, "alice")

    assert page.url.endswith(detail), page.url
    expect(page.locator("main")).to_contain_text(BINDING)
    expect(approve_button(page)).to_be_visible()


def test_step_up_asks_for_the_password_before_approving(page: Page, agent: HttpAgent, alice) -> None:
    auth_req_id = agent.ask(binding_message=BINDING, acr_values=ACR_FRESH_PASSWORD)
    page.goto(wait_for_prompt().link)
    password = page.locator("input[type=password]")
    expect(password).to_be_visible()

    password.fill("not my password")
    tap_and_wait(page, approve_button(page))

    expect(page.get_by_role("alert")).to_contain_text(re.compile(r"password", re.I))
    assert request_for(auth_req_id).status == Status.PENDING
    password = page.locator("input[type=password]")
    expect(password).to_be_visible()

    password.fill(PASSWORD)
    tap_and_wait(page, approve_button(page))

    expect(page.locator("main")).to_contain_text(re.compile(r"you approved this request", re.I))
    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.text
    assert id_token_claims(tokens.json())["acr"] == ACR_FRESH_PASSWORD


def test_sign_in_form_post_passes_the_csrf_origin_check(page: Page, alice) -> None:
    """Chromium sends `Origin: null` with a form POST from a page served with `Referrer-Policy: no-referrer`
    (Fetch, "append a request Origin header"), and Django's CSRF check refuses that origin: every form breaks."""
    login = page.goto("/accounts/login/")
    assert login is not None
    policy = login.headers.get("referrer-policy")
    posted: list[str | None] = []
    page.on("request", lambda r: posted.append(r.headers.get("origin")) if r.method == "POST" else None)

    sign_in(page, "alice")

    assert posted, "the login form was not posted"
    assert posted[0] not in (None, "null"), (
        f"the login form was posted with Origin {posted[0]!r} (page's Referrer-Policy: {policy!r}); "
        "Django's CSRF origin check refuses it. Use Referrer-Policy same-origin."
    )
    assert "/accounts/login/" not in page.url, page.locator("body").inner_text()


# --- Headers and the browser's own reports ----------------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def test_pages_send_the_security_headers(page: Page, agent: HttpAgent, alice, signed_in) -> None:
    agent.ask(binding_message=BINDING)
    link = wait_for_prompt().link
    approval_request = ApprovalRequest.objects.get()
    responses = {"login": page.goto("/accounts/login/"), "link": page.goto(link)}
    # The answer at the link's own URL (a redirect now) never passes the token on in a Referer.
    hop = responses["link"].request.redirected_from
    link_answer = hop.response() if hop is not None else responses["link"]
    assert link_answer is not None and link_answer.url == link
    assert link_answer.headers.get("referrer-policy") == "no-referrer", link_answer.headers
    signed_in("alice")
    responses["inbox"] = page.goto("/approvals/")
    responses["request"] = page.goto(f"/approvals/{approval_request.pk}/")
    responses["enrol"] = page.goto("/approvals/devices/enrol/")

    for name, response in responses.items():
        assert response is not None and response.status == 200, (name, response and response.status)
        headers = response.headers
        csp = headers.get("content-security-policy")
        assert csp, f"{name}: no Content-Security-Policy"
        directives = csp_directives(csp)
        script_src = directives.get("script-src", directives.get("default-src"))
        assert script_src is not None, f"{name}: {csp}"
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, f"{name}: {csp}"
        assert directives.get("frame-ancestors") == ["'none'"], f"{name}: {csp}"
        assert headers.get("x-frame-options") == "DENY", name
        # Never a Referer to another site; not no-referrer either, which makes Chromium post forms with Origin: null.
        assert headers.get("referrer-policy") == "same-origin", (name, headers.get("referrer-policy"))
        assert headers.get("x-content-type-options") == "nosniff", name


def test_main_pages_report_no_console_errors_or_csp_violations(
    page: Page, browser_errors: BrowserErrors, push_service, agent: HttpAgent, alice, server: str
) -> None:
    """With Web Push configured, as in production (the enrolment page's device list is 404 without it)."""
    page.context.grant_permissions(["notifications"], origin=server)
    alice_phone = push_service.subscribe("alice")
    push_subscription_save(approver=alice, subscription=alice_phone.info, user_agent="test")
    agent.ask(binding_message=BINDING)
    agent.ask(binding_message="Book a flight to Lisbon")
    pushes = [push.json() for push in push_service.wait_for_pushes(2)]
    first_url = next(payload["url"] for payload in pushes if BINDING in payload["body"])

    page.goto("/accounts/login/", wait_until="networkidle")
    page.goto(first_url, wait_until="networkidle")
    tap_and_wait(page, approve_button(page))  # decides through the link, which signs no one in
    page.wait_for_load_state("networkidle")
    page.goto("/approvals/", wait_until="networkidle")
    assert "/accounts/login/" in page.url, page.url
    sign_in(page, "alice")
    page.wait_for_load_state("networkidle")
    expect(page.locator("main")).to_contain_text("Book a flight to Lisbon")
    with page.expect_navigation():
        page.get_by_text("Book a flight to Lisbon").tap()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1200)  # let the countdown tick
    page.goto("/approvals/devices/enrol/", wait_until="networkidle")

    assert browser_errors.all() == []
