"""Lockouts that hold under concurrency, that an attacker cannot turn against other people, and that cover every way
to guess a password (issue 14, findings 6, 8 and 11).

- user_code and password guesses are counted before they are evaluated (approvals.attempts), so at most the limit
  is ever checked per window, however many requests race (finding 6);
- a bad prompt link counts against its own request and a server-wide rate, never against an address, and a
  client address comes from a proxy header only when one is configured (finding 8);
- sign-in is throttled per account and per address, by the authentication backend every sign-in form uses, and
  shares the per-person count with the step-up password (finding 11).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.cache import caches
from django.test import Client

from approvals import links
from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest, AuditEvent
from approvals.store import redis_store
from tests import factories
from tests.conftest import Agent
from tests.test_concurrency import run_together

Status = ApprovalRequest.Status
RACERS = 20


class CountingHasher(PBKDF2PasswordHasher):
    """PBKDF2 like production's (slow enough for a race to be real), counting the guesses it checks."""

    algorithm = "counting_pbkdf2"
    iterations = 200_000
    checked = 0
    lock = threading.Lock()

    def verify(self, password: str, encoded: str) -> bool:
        with CountingHasher.lock:
            CountingHasher.checked += 1
        return super().verify(password, encoded)


@pytest.fixture
def counting(settings) -> type[CountingHasher]:
    settings.PASSWORD_HASHERS = ["tests.security.test_lockouts.CountingHasher", *settings.PASSWORD_HASHERS]
    CountingHasher.checked = 0
    return CountingHasher


def link_path(approval_request: ApprovalRequest) -> str:
    return links.link_url(approval_request).removeprefix("http://testserver")


def random_link() -> str:
    return f"/approvals/l/{secrets.token_urlsafe(33)}/"


def sign_in(browser: Client, username: str, password: str, path: str = "/accounts/login/", **extra: str):
    return browser.post(path, {"username": username, "password": password}, **extra)


def signed_in(browser: Client) -> bool:
    return "_auth_user_id" in browser.session


def stale_session(user: Any) -> Client:
    """A browser signed in long enough ago that approving at the higher level asks for the password again."""
    browser = Client()
    browser.force_login(user)
    session = browser.session
    session[links.SESSION_PASSWORD_AT] -= approvals_settings.FRESH_PASSWORD_SECONDS + 1
    session.save()
    return browser


# --- finding 6: counted before evaluated, on PostgreSQL with real threads ---------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_racing_user_code_guesses_are_checked_at_most_the_limit(make_agent, counting):
    code_agent = make_agent(name="Careful agent", backchannel_user_code_parameter=True)
    factories.make_approver("bob", user_code="4711")
    counting.checked = 0

    def guess(n: int):
        def call() -> int:
            agent = Agent(code_agent.client_id, code_agent.client_secret, Client(), code_agent.application)
            return agent.bc_authorize(scope="openid", login_hint="bob", user_code=f"{n:04d}").status_code

        return call

    answers = run_together(*(guess(n) for n in range(RACERS)))

    assert answers == [400] * RACERS
    assert counting.checked <= 5, f"{counting.checked} guesses were checked"
    assert not ApprovalRequest.objects.exists()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_racing_step_up_passwords_are_checked_at_most_the_limit(agent, counting):
    person = factories.make_approver("carol")
    approval_request = factories.make_approval_request(person, agent, acr_values=links.ACR_FRESH_PASSWORD)
    browsers = [stale_session(person.user) for _ in range(RACERS)]
    counting.checked = 0

    def guess(browser: Client, n: int):
        return lambda: (
            browser.post(
                f"/approvals/{approval_request.pk}/decide/", {"decision": "approve", "password": f"guess {n}"}
            ).status_code
        )

    run_together(*(guess(browser, n) for n, browser in enumerate(browsers)))

    assert counting.checked <= 5, f"{counting.checked} passwords were checked"
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_racing_sign_ins_are_checked_at_most_the_limit(counting):
    factories.make_approver("dave")
    counting.checked = 0

    run_together(*(lambda n=n: sign_in(Client(), "dave", f"guess {n}").status_code for n in range(RACERS)))

    assert counting.checked <= 5, f"{counting.checked} passwords were checked"


@pytest.mark.django_db
def test_the_right_user_code_is_never_counted_against_its_owner(make_agent):
    code_agent = make_agent(name="Careful agent", backchannel_user_code_parameter=True)
    factories.make_approver("bob", user_code="4711")

    for _ in range(8):
        assert code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711").status_code == 200


@pytest.mark.django_db
def test_the_same_lockout_holds_on_the_embedded_servers_cache(make_agent, settings):
    """Without Redis (the embedded server) the counters live in process memory and behave the same."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "lockouts"}}
    caches["default"].clear()
    code_agent = make_agent(name="Careful agent", backchannel_user_code_parameter=True)
    factories.make_approver("bob", user_code="4711")
    assert code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711").status_code == 200
    for _ in range(5):
        assert code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="0000").status_code == 400

    assert code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="4711").status_code == 400
    for _ in range(5):
        sign_in(Client(), "bob", "wrong")
    browser = Client()
    sign_in(browser, "bob", factories.PASSWORD)
    assert not signed_in(browser)


@pytest.mark.redis
@pytest.mark.django_db
def test_every_failure_counter_ends_with_its_window(make_agent):
    code_agent = make_agent(name="Careful agent", backchannel_user_code_parameter=True)
    factories.make_approver("bob", user_code="4711")
    code_agent.bc_authorize(scope="openid", login_hint="bob", user_code="0000")
    sign_in(Client(), "bob", "wrong")
    Client().get(random_link())

    redis = redis_store().client
    keys = redis.keys(caches["default"].make_key("approvals:attempts:*"))
    assert len(keys) >= 3, keys
    for key in keys:
        assert 0 < redis.ttl(key) <= 900, key


# --- finding 8: prompt links ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bad_links_from_one_address_lock_out_no_one_else(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "LINK_MAX_FAILURES": 3}
    attacker = Client()  # every browser is 127.0.0.1 here, as everyone is behind a reverse proxy
    for _ in range(10):
        assert attacker.get(random_link()).status_code == 404

    assert Client().get(link_path(factories.make_approval_request(approver, agent))).status_code == 302


@pytest.mark.django_db
def test_bad_guesses_at_one_link_lock_that_link_only(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "LINK_MAX_FAILURES": 3}
    target, other = factories.make_approval_request(approver, agent), factories.make_approval_request(approver, agent)
    token = links.link_token(target)
    for n in range(3):
        forged = token[:22] + secrets.token_urlsafe(16)[:21] + str(n)
        assert Client().get(f"/approvals/l/{forged}/").status_code == 404

    refused = Client().get(link_path(target))

    assert refused.status_code == 429 and "Sign in" in refused.content.decode()
    assert Client().get(link_path(other)).status_code == 302


@pytest.mark.django_db
def test_a_flood_of_bad_links_is_refused_but_good_links_still_work(agent, approver, settings):
    settings.APPROVALS = {**settings.APPROVALS, "LINK_GLOBAL_MAX_FAILURES": 5}
    for n in range(5):
        assert Client(REMOTE_ADDR=f"198.51.100.{n}").get(random_link()).status_code == 404

    assert Client(REMOTE_ADDR="198.51.100.99").get(random_link()).status_code == 429
    assert Client().get(link_path(factories.make_approval_request(approver, agent))).status_code == 302


# --- finding 8: client addresses behind a proxy -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_forwarded_address_is_ignored_unless_a_proxy_header_is_configured(settings):
    settings.APPROVALS = {**settings.APPROVALS, "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 3}
    factories.make_approver("alice")
    for n in range(3):
        sign_in(Client(), f"nobody{n}", "guess", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")

    browser = Client()
    sign_in(browser, "alice", factories.PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.77")

    assert not signed_in(browser)


@pytest.mark.django_db
def test_a_configured_proxy_header_gives_each_client_its_own_address(settings):
    settings.APPROVALS = {
        **settings.APPROVALS,
        "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 3,
        "CLIENT_IP_HEADER": "X-Forwarded-For",
    }
    factories.make_approver("alice")
    for n in range(3):
        # The client may send its own X-Forwarded-For; the proxy appends the address it saw, the last entry.
        sign_in(Client(), f"nobody{n}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.0")

    attacker, neighbour = Client(), Client()
    sign_in(attacker, "alice", factories.PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.0")
    sign_in(neighbour, "alice", factories.PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.5")

    assert not signed_in(attacker)
    assert signed_in(neighbour)


@pytest.mark.django_db
def test_the_automated_endpoint_audits_the_forwarded_address(agent, approver, settings):
    secret = "certification-" + "s" * 40
    settings.APPROVALS = {
        **settings.APPROVALS,
        "AUTOMATED_APPROVAL_SECRET": secret,
        "CLIENT_IP_HEADER": "X-Real-IP",
    }
    approval_request = factories.make_approval_request(approver, agent)

    Client().post(
        "/approvals/automated/",
        {"token": approval_request.auth_req_id, "type": "allow"},
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_X_REAL_IP="203.0.113.40",
    )

    (event,) = AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.APPROVED)
    assert event.detail["automated_by"] == "203.0.113.40"


# --- finding 11: sign-in ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_wrong_passwords_lock_the_account_at_the_sign_in_form(db):
    factories.make_approver("alice")
    for _ in range(5):
        assert sign_in(Client(), "alice", "wrong").status_code == 200

    browser = Client()
    refused = sign_in(browser, "alice", factories.PASSWORD)

    assert not signed_in(browser)
    assert "Too many failed sign-ins" in refused.content.decode()


@pytest.mark.django_db
def test_wrong_passwords_from_one_address_are_throttled_across_accounts(settings):
    settings.APPROVALS = {**settings.APPROVALS, "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 4}
    factories.make_approver("alice")
    for n in range(4):
        sign_in(Client(), f"someone{n}", "guess")

    browser = Client()
    sign_in(browser, "alice", factories.PASSWORD)
    assert not signed_in(browser)
    elsewhere = Client(REMOTE_ADDR="192.0.2.50")
    sign_in(elsewhere, "alice", factories.PASSWORD)
    assert signed_in(elsewhere)


@pytest.mark.django_db
def test_the_admin_sign_in_is_throttled_too(db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", factories.PASSWORD)
    for _ in range(5):
        sign_in(Client(), "root", "wrong", path="/admin/login/")

    browser = Client()
    sign_in(browser, admin.get_username(), factories.PASSWORD, path="/admin/login/")

    assert not signed_in(browser)


@pytest.mark.django_db
def test_signing_in_again_does_not_sidestep_a_locked_step_up(agent):
    person = factories.make_approver("erin")
    approval_request = factories.make_approval_request(person, agent, acr_values=links.ACR_FRESH_PASSWORD)
    session = stale_session(person.user)
    for _ in range(5):
        session.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve", "password": "wrong"})

    fresh = Client()
    sign_in(fresh, "erin", factories.PASSWORD)
    fresh.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"})

    assert not signed_in(fresh)
    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING


@pytest.mark.django_db
def test_failed_sign_ins_lock_the_step_up_too(agent):
    person = factories.make_approver("frank")
    approval_request = factories.make_approval_request(person, agent, acr_values=links.ACR_FRESH_PASSWORD)
    for _ in range(5):
        sign_in(Client(), "frank", "wrong")
    session = stale_session(person.user)

    session.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve", "password": factories.PASSWORD})

    approval_request.refresh_from_db()
    assert approval_request.status == Status.PENDING
