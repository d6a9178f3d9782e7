"""Browser tests: the approver's phone pages in Debian's Chromium, driven by Playwright against a live server.

Chromium is /usr/bin/chromium from apt (`playwright install` is never run). Without it these tests skip, except in
CI (CI=true), where they fail.

Cookies: with DEBUG false the session and CSRF cookies are Secure, and the production settings stay so. Chromium
stores Secure cookies sent over plain http from a host it treats as potentially trustworthy; http://localhost is
that by name (Chromium 156 took them from http://127.0.0.1 too, but that is less settled across browsers and
versions), so the live server is reached at http://localhost:<port>, pytest-django's default address.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import requests
from playwright.sync_api import BrowserContext, ConsoleMessage, Page

from approvals.channels import locmem
from approvals.channels.base import Prompt
from tests import factories, prompting
from tests.fakes.push_service import FakePushService

# Playwright's sync API runs an event loop in the test thread; Django refuses ORM calls there without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# CHROMIUM_PATH: another Chromium build, or a missing path to see the skip/fail behaviour.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

PHONE_USER_AGENT = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)
PHONE = {
    "viewport": {"width": 375, "height": 812},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": PHONE_USER_AGENT,
    "locale": "en-US",
}

CIBA = "urn:openid:params:grant-type:ciba"
PASSWORD = factories.PASSWORD


def _have_chromium() -> bool:
    return os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)


@pytest.fixture(scope="session", autouse=True)
def _require_chromium() -> None:
    """Runs before the session's browser and live server are started."""
    if _have_chromium():
        return
    message = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(message + "; required in CI", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any], live_server: Any) -> dict[str, Any]:
    """A phone: 375 px wide, touch, mobile user agent; relative URLs go to the live server."""
    assert live_server.url.startswith("http://localhost:"), live_server.url
    return {**browser_context_args, **PHONE, "base_url": live_server.url}


@pytest.fixture
def server(live_server: Any, transactional_db: Any, settings: Any) -> str:
    """The live server's origin, with prompt links pointing at it (PUBLIC_URL) and the locmem channel in use."""
    settings.PUBLIC_URL = live_server.url
    settings.APPROVALS = {**settings.APPROVALS, "PROMPT_CHANNELS": ["approvals.channels.locmem.LocmemChannel"]}
    return live_server.url


@dataclass
class BrowserErrors:
    """Console errors, uncaught exceptions and CSP violations one page reported."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.console, *self.page_errors]


@pytest.fixture
def browser_errors(page: Page) -> BrowserErrors:
    errors = BrowserErrors()

    def on_console(message: ConsoleMessage) -> None:
        # CSP violations are reported as console errors ("Refused to execute inline script ...").
        if message.type in ("error", "assert") or "Content Security Policy" in message.text:
            errors.console.append(f"{message.type}: {message.text} @ {message.location.get('url', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.page_errors.append(f"pageerror: {exc}"))
    return errors


# --- People and agents ------------------------------------------------------------------------------------------------


@pytest.fixture
def alice(server: str):
    return factories.make_approver("alice", email="alice@example.com", phone="+14155550123")


@pytest.fixture
def bob(server: str):
    return factories.make_approver("bob", email="bob@example.com", phone="+14155550124")


@dataclass
class HttpAgent:
    """An agent talking to the live server over real HTTP (form posts with client_secret_basic)."""

    base_url: str
    client_id: str
    client_secret: str
    application: Any
    http: requests.Session = field(default_factory=requests.Session)

    def _auth(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        return self.http.post(self.base_url + path, data=data, headers=self._auth(), timeout=10)

    def bc_authorize(self, **params: str) -> requests.Response:
        return self.post("/oauth/bc-authorize/", params)

    def ask(self, login_hint: str = "alice", **params: str) -> str:
        """bc-authorize that must succeed; the auth_req_id."""
        response = self.bc_authorize(**{"scope": "openid", "login_hint": login_hint, **params})
        assert response.status_code == 200, response.text
        return response.json()["auth_req_id"]

    def poll(self, auth_req_id: str) -> requests.Response:
        return self.post("/oauth/token/", {"grant_type": CIBA, "auth_req_id": auth_req_id})


@pytest.fixture
def agent(server: str) -> Iterator[HttpAgent]:
    application, secret = factories.make_agent_client(name="Travel agent")
    http_agent = HttpAgent(server, application.client_id, secret, application)
    yield http_agent
    http_agent.http.close()


def id_token_claims(token_response: dict[str, Any]) -> dict[str, Any]:
    return jwt.decode(token_response["id_token"], options={"verify_signature": False})


# --- Web Push ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vapid_keys() -> tuple[str, str]:
    return prompting.vapid_keys()


@pytest.fixture
def push_service(server: str, settings: Any, vapid_keys: tuple[str, str]) -> Iterator[FakePushService]:
    """Web Push as the only prompt channel, aimed at a fake push service on 127.0.0.1 (loopback allowed)."""
    with FakePushService(expected_vapid_public_key=vapid_keys[1]) as fake:
        prompting.use_webpush(settings, fake, vapid_keys)
        yield fake


# --- Prompts and pages ------------------------------------------------------------------------------------------------


def wait_for_prompt(n: int = 1, timeout: float = 10) -> Prompt:
    """The n-th prompt in the locmem outbox (the eager prompt task runs after the server thread commits)."""
    deadline = time.monotonic() + timeout
    while len(locmem.outbox) < n:
        assert time.monotonic() < deadline, f"no prompt #{n} within {timeout}s: {locmem.outbox}"
        time.sleep(0.05)
    return locmem.outbox[n - 1]


@pytest.fixture
def prompt() -> Callable[..., Prompt]:
    return wait_for_prompt


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Fill and submit the login form the page shows."""
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    with page.expect_navigation():
        page.locator("form:has(input[name=password]) [type=submit]").first.click()


@pytest.fixture
def signed_in(page: Page, server: str) -> Callable[[str], Page]:
    """Sign a person in through the real login page."""

    def run(username: str, password: str = PASSWORD) -> Page:
        page.goto("/accounts/login/")
        sign_in(page, username, password)
        assert "/accounts/login/" not in page.url, page.content()
        return page

    return run


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A phone page that gives up after 10 s instead of Playwright's 30."""
    new_page = context.new_page()
    new_page.set_default_timeout(10_000)
    new_page.set_default_navigation_timeout(15_000)
    return new_page
