"""The machine endpoints' lean path (issue 17): polls and backchannel requests skip the browser-only middlewares
(sessions, CSRF, auth, messages), get a CSP built once per process and answers encoded once, and keep every
protection of every other answer.

Each test names one property the shortcut could have lost: the security headers and no-store on the two answers an
agent gets while waiting, the NUL refusal, the body size limit, duplicate parameters, host validation, CSRF and
sessions everywhere else, the view's own csrf_exempt, and a CSP setting change reaching the header.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from csp.constants import HEADER as CSP_HEADER
from csp.utils import build_policy
from django.conf import settings
from django.test import Client, override_settings
from django.urls import resolve, reverse

from authz.errors import SlowDown
from config.middleware import MACHINE_ENDPOINT_PATHS
from tests.factories import assert_oauth_error

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

FORM = "application/x-www-form-urlencoded"
CIBA = "urn:openid:params:grant-type:ciba"


def ask(agent, django_capture_on_commit_callbacks) -> str:
    with django_capture_on_commit_callbacks(execute=True):  # the mirror is written when the request commits
        ack = agent.bc_authorize(scope="openid", login_hint="alice")
    assert ack.status_code == 200, ack.content
    return ack.json()["auth_req_id"]


def assert_security_headers(response) -> None:
    assert response[CSP_HEADER] == build_policy()
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    # Nothing of a browser session: no cookie set, no Vary on one.
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_the_lean_path_is_the_token_and_backchannel_endpoints_alone():
    # /oauth/authorize/ and every page need sessions and CSRF: only these exact paths are skipped.
    assert {reverse("oauth2_provider:token"), reverse("oauth2_provider:bc-authorize")} == MACHINE_ENDPOINT_PATHS


def test_a_backchannel_answer_carries_every_security_header(agent, approver):
    agent.http.cookies["sessionid"] = "not-a-session"  # a browser cookie sent along must change nothing

    acknowledged = agent.bc_authorize(scope="openid", login_hint="alice")
    refused = agent.bc_authorize(scope="openid", login_hint="nobody-by-that-name")

    assert acknowledged.status_code == 200, acknowledged.content
    assert_oauth_error(refused, 400, "unknown_user_id")
    assert_security_headers(acknowledged)
    assert_security_headers(refused)


def test_nul_size_and_host_are_refused_on_the_backchannel_endpoint(agent, approver):
    in_header = agent.http.post(
        "/oauth/bc-authorize/",
        urlencode({"scope": "openid", "login_hint": "alice"}),
        content_type=FORM,
        HTTP_X_AGENT="a\x00b",
        **agent.basic(),
    )
    in_body = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="a\x00b")
    too_large = agent.bc_authorize(
        scope="openid", login_hint="alice", pad="x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    )
    with override_settings(ALLOWED_HOSTS=["testserver"]):  # the test settings allow any host
        other_host = agent.http.post(
            "/oauth/bc-authorize/",
            urlencode({"scope": "openid", "login_hint": "alice"}),
            content_type=FORM,
            HTTP_HOST="evil.example.net",
            **agent.basic(),
        )

    assert_oauth_error(in_header, 400, "invalid_request")
    assert_oauth_error(in_body, 400, "invalid_request")
    assert too_large.status_code == 413
    assert other_host.status_code == 400


def test_the_backchannel_view_is_csrf_exempt_by_its_own_mark():
    assert resolve("/oauth/bc-authorize/").func.csrf_exempt is True


def test_pending_and_slow_down_carry_every_security_header(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    agent.http.cookies["sessionid"] = "not-a-session"  # a browser cookie sent along must change nothing

    pending = agent.poll(auth_req_id)
    slow_down = agent.poll(auth_req_id)

    assert_oauth_error(pending, 400, "authorization_pending")
    assert_oauth_error(slow_down, 400, "slow_down")
    assert_security_headers(pending)
    assert_security_headers(slow_down)


def test_slow_down_is_what_the_error_class_writes(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    agent.poll(auth_req_id)

    first, second = agent.poll(auth_req_id), agent.poll(auth_req_id)

    for response in (first, second):
        wait = int(response.json()["error_description"].split("wait at least ")[1].split()[0])
        expected = SlowDown(f"Polled too often; wait at least {wait} seconds before polling again.").response()
        assert response.content == expected.content
        assert response.status_code == expected.status_code
        assert response["Content-Type"] == expected["Content-Type"]
    assert first.json() != second.json()  # the interval grew: each wait has its own body


def test_nul_is_refused_on_the_token_endpoint(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    agent.poll(auth_req_id)
    body = {"grant_type": CIBA, "auth_req_id": auth_req_id}

    in_header = agent.http.post(
        "/oauth/token/", urlencode(body), content_type=FORM, HTTP_X_AGENT="a\x00b", **agent.basic()
    )
    in_body = agent.post("/oauth/token/", {**body, "scope": "a\x00b"})

    assert_oauth_error(in_header, 400, "invalid_request")
    assert_oauth_error(in_body, 400, "invalid_request")


def test_a_repeated_parameter_is_refused_before_the_mirror(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    agent.poll(auth_req_id)  # the mirror now knows the client and the request
    body = urlencode([("grant_type", CIBA), ("auth_req_id", auth_req_id), ("auth_req_id", auth_req_id)])

    response = agent.http.post("/oauth/token/", body, content_type=FORM, **agent.basic())

    assert_oauth_error(response, 400, "invalid_request")


def test_the_body_size_limit_holds_on_the_token_endpoint(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)

    response = agent.post("/oauth/token/", {"grant_type": CIBA, "auth_req_id": auth_req_id, "pad": padding})

    assert_oauth_error(response, 413, "invalid_request")


def test_an_unknown_host_is_refused_on_the_token_endpoint(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    body = urlencode({"grant_type": CIBA, "auth_req_id": auth_req_id})

    response = agent.http.post("/oauth/token/", body, content_type=FORM, HTTP_HOST="evil.example.net", **agent.basic())

    assert response.status_code == 400


def test_the_token_view_is_csrf_exempt_by_its_own_mark():
    # Not only because CSRF's middleware skips the path: the view carries the marks DOT gives it.
    view = resolve("/oauth/token/").func
    assert view.csrf_exempt is True
    assert view.login_required is False


def test_csrf_and_sessions_still_guard_the_pages(approver):
    browser = Client(enforce_csrf_checks=True)

    refused = browser.post("/accounts/login/", {"username": "alice", "password": "whatever"})
    page = browser.get("/accounts/login/")

    assert refused.status_code == 403
    assert page.status_code == 200
    assert "csrftoken" in page.cookies
    assert page[CSP_HEADER] == build_policy()


def test_a_changed_policy_reaches_the_token_endpoint(agent, approver, django_capture_on_commit_callbacks):
    auth_req_id = ask(agent, django_capture_on_commit_callbacks)
    agent.poll(auth_req_id)
    policy = {"DIRECTIVES": {"default-src": ["'none'"]}}

    with override_settings(CONTENT_SECURITY_POLICY=policy, CONTENT_SECURITY_POLICY_REPORT_ONLY=policy):
        changed = agent.poll(auth_req_id)
    after = agent.poll(auth_req_id)

    assert changed[CSP_HEADER] == "default-src 'none'"
    assert changed["Content-Security-Policy-Report-Only"] == "default-src 'none'"
    assert after[CSP_HEADER] == build_policy()
    assert "Content-Security-Policy-Report-Only" not in after
