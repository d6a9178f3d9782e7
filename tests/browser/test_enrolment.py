""" "Get approval requests on this phone": the enrolment page registers the service worker and lists devices.

Headless Chromium reaches no push service, so PushManager.subscribe() fails there. The test then posts the
subscription the page would have posted (one made by the fake push service) from the page itself, and follows a
prompt to the fake push service, which checks VAPID and decrypts it as a browser would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from approvals.links import link_url
from approvals.models import ApprovalRequest, PushSubscription
from tests.browser.conftest import BrowserErrors, HttpAgent
from tests.fakes.push_service import FakePushService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ENROL = "/approvals/devices/enrol/"

SERVICE_WORKER_READY = """
async () => {
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("not ready in 10 s")), 10000));
  const registration = await Promise.race([navigator.serviceWorker.ready, timeout]);
  return { scope: registration.scope, script: registration.active && registration.active.scriptURL };
}
"""

POST_SUBSCRIPTION = """
async (subscription) => {
  const enrol = document.getElementById("enrol");
  const response = await fetch(enrol.dataset.devicesUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRFToken": enrol.dataset.csrfToken, "Content-Type": "application/json" },
    body: JSON.stringify(subscription),
  });
  return { status: response.status, body: await response.json() };
}
"""


def test_enrol_this_phone_then_get_a_prompt_and_remove_it(
    page: Page,
    browser_errors: BrowserErrors,
    push_service: FakePushService,
    agent: HttpAgent,
    alice,
    signed_in,
    server: str,
) -> None:
    page.context.grant_permissions(["notifications"], origin=server)
    signed_in("alice")
    page.goto(ENROL, wait_until="networkidle")
    expect(page.locator("h1")).to_contain_text("Get approval requests on this phone")
    expect(page.locator("#devices-empty")).to_be_visible()

    button = page.get_by_role("button", name="Turn on notifications")
    button.tap()
    status = page.locator("#enrol-status")
    expect(status).not_to_have_text(re.compile(r"^$|Turning on", re.I), timeout=15_000)

    worker = page.evaluate(SERVICE_WORKER_READY)
    assert worker["scope"] == f"{server}/", worker
    assert worker["script"] == f"{server}/sw.js", worker
    # No push service in headless Chromium: the page says so and lets the person try again.
    expect(status).to_have_text("Could not turn on notifications. Try again.")
    expect(button).to_be_enabled()
    assert not PushSubscription.objects.exists()

    subscription = push_service.subscribe("alices-phone")
    saved: dict[str, Any] = page.evaluate(POST_SUBSCRIPTION, subscription.info)
    assert saved["status"] == 201, saved
    device = PushSubscription.objects.get()
    assert device.endpoint == subscription.endpoint
    assert "Android" in device.user_agent

    auth_req_id = agent.ask(binding_message="Pay 420 EUR to ACME")
    (push,) = push_service.wait_for_pushes(1)
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    payload = push.json()
    assert payload["url"] == link_url(approval_request), payload
    assert payload["url"].startswith(f"{server}/approvals/l/"), payload
    assert "Pay 420 EUR to ACME" in payload["body"], payload

    page.reload(wait_until="networkidle")
    devices = page.locator("#devices li")
    expect(devices).to_have_count(1)
    expect(devices.first).to_contain_text("Chrome · Android")
    expect(page.locator("#devices-empty")).to_be_hidden()

    devices.first.get_by_role("button").tap()

    expect(page.locator("#devices-status")).to_have_text("Device removed.")
    expect(devices).to_have_count(0)
    expect(page.locator("#devices-empty")).to_be_visible()
    assert not PushSubscription.objects.exists()
    assert browser_errors.page_errors == []
