"""No credential reaches a log line (issue 14, "Keep them closed"; finding 10's logs).

Every flow runs for real (HTTP through Django's test client, approvals through the approver's link or the automated
endpoint, ping and push delivered to the fake agent endpoint by the eager Celery task) while every logger is at
DEBUG and every record is captured: client secrets, access/refresh/ID tokens, auth_req_ids, link tokens,
client_notification_tokens, registration and initial access tokens, the automated-approval secret and the
approver's password must appear in none. The access logs are checked the same way: runserver's (`make run`) and
gunicorn's, started with docker-compose.yml's own command line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, get_internal_wsgi_application
from django.db import connection
from django.test import Client

from approvals.channels import locmem
from approvals.models import ApprovalRequest
from authz.clients.registration import initial_access_token_create
from tests import factories
from tests.conftest import CIBA, FORM, Agent
from tests.fakes.agent_endpoint import FakeAgentEndpoint

# On commit hooks (prompts, ping and push) run as they do in production, so the whole flow writes its logs.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
AUTOMATED_SECRET = "automated-" + secrets.token_urlsafe(24)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class Capture(logging.Handler):
    """Every record, as a handler prints it: message, traceback and stack."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[Capture]:
    """The root logger and every named logger at DEBUG, enabled, captured (also those that do not propagate)."""
    capture = Capture()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    attached = [logger for logger in loggers if logger is logging.getLogger() or not logger.propagate]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    for logger in attached:
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger in attached:
            logger.removeHandler(capture)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


class Secrets:
    """The credentials a test has seen on the wire, by what they are."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, kind: str, value: str | None) -> str:
        assert value, f"{kind} is empty: the flow did not produce it"
        self.values[value] = kind
        return value

    def add_tokens(self, body: dict[str, Any], where: str) -> dict[str, Any]:
        for name in ("access_token", "refresh_token", "id_token"):
            if name in body:
                self.add(f"{name} ({where})", body[name])
        return body

    def assert_absent_from(self, text: str, where: str) -> None:
        leaked = sorted({kind for value, kind in self.values.items() if value in text})
        assert leaked == [], f"{where} carries: {', '.join(leaked)}"


@pytest.fixture
def seen() -> Secrets:
    return Secrets()


@pytest.fixture
def automated(settings: Any) -> str:
    settings.APPROVALS = {**settings.APPROVALS, "AUTOMATED_APPROVAL_SECRET": AUTOMATED_SECRET}
    return AUTOMATED_SECRET


def new_agent(seen: Secrets, **ciba: Any) -> Agent:
    application, secret = factories.make_agent_client(**ciba)
    seen.add("client secret", secret)
    return Agent(application.client_id, secret, Client(), application)


def ask(agent: Agent, seen: Secrets, **params: str) -> ApprovalRequest:
    response = agent.bc_authorize(scope="openid profile", login_hint="alice", **params)
    assert response.status_code == 200, response.content
    auth_req_id = seen.add("auth_req_id", response.json()["auth_req_id"])
    return ApprovalRequest.objects.get(auth_req_id=auth_req_id)


def link_of(approval_request: ApprovalRequest, seen: Secrets) -> str:
    """The link the prompt carried (the locmem channel's outbox), as a path; its token is a secret."""
    (prompt,) = [p for p in locmem.outbox if p.approval_request_id == str(approval_request.pk)]
    seen.add("link token", prompt.link.rstrip("/").rsplit("/", 1)[-1])
    return urllib.parse.urlsplit(prompt.link).path


def approve_by_link(approval_request: ApprovalRequest, seen: Secrets) -> None:
    """The approver taps the prompt's link on their phone and approves on the page it opens."""
    phone = Client()
    opened = phone.get(link_of(approval_request, seen))
    assert opened.status_code == 302, opened.content
    decided = phone.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"})
    assert decided.status_code == 302, decided.content
    approval_request.refresh_from_db()
    # Push clients' tokens are issued on the decision's commit.
    assert approval_request.status in (ApprovalRequest.Status.APPROVED, ApprovalRequest.Status.CONSUMED)


def post_form(http: Client, path: str, params: dict[str, str], **extra: Any) -> Any:
    return http.post(path, urlencode(params), content_type=FORM, **extra)


def random_like(value: str) -> str:
    """A credential-shaped value of the same length that was never issued (a mistyped or guessed one)."""
    return secrets.token_urlsafe(len(value))[: len(value)]


# --- the flows --------------------------------------------------------------------------------------------------------


def test_poll_refresh_userinfo_introspection_exchange_and_revocation_log_no_credential(
    logs: Capture, seen: Secrets, approver: Any
) -> None:
    seen.add("password", factories.PASSWORD)
    agent = new_agent(seen, name="Travel agent", token_exchange_enabled=True)

    approval_request = ask(agent, seen, binding_message="Pay 420 EUR")
    pending = agent.poll(approval_request.auth_req_id)
    assert pending.json()["error"] == "authorization_pending"
    approve_by_link(approval_request, seen)
    tokens = seen.add_tokens(agent.poll(approval_request.auth_req_id).json(), "poll")
    assert agent.poll(approval_request.auth_req_id).status_code == 400  # redeemed once

    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content
    fresh = seen.add_tokens(refreshed.json(), "refresh")

    userinfo = Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {fresh['access_token']}")
    assert userinfo.status_code == 200, userinfo.content
    introspection = agent.post("/oauth/introspect/", {"token": fresh["access_token"]})
    assert introspection.status_code == 200 and introspection.json()["active"] is True, introspection.content

    exchanged = agent.post(
        "/oauth/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": fresh["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": "openid",
            "resource": "https://payments.example/",
        },
    )
    assert exchanged.status_code == 200, exchanged.content
    seen.add_tokens(exchanged.json(), "exchange")

    revoked = agent.post("/oauth/revoke/", {"token": fresh["refresh_token"], "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200, revoked.content

    # What goes wrong is logged too: a wrong secret, replayed and guessed tokens, a guessed link, a bad password.
    wrong_secret = seen.add("a wrong client secret", random_like(agent.client_secret))
    refused = Agent(agent.client_id, wrong_secret, Client(), agent.application).poll(approval_request.auth_req_id)
    assert refused.status_code == 401
    replay = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 400
    guessed = seen.add("a guessed refresh token", random_like(tokens["refresh_token"]))
    assert agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": guessed}).status_code == 400
    guessed_link = seen.add("a guessed link token", secrets.token_urlsafe(33))
    assert Client().get(f"/approvals/l/{guessed_link}/").status_code == 404
    signed_in = Client().post("/accounts/login/", {"username": "alice", "password": factories.PASSWORD})
    assert signed_in.status_code == 302
    seen.add("a wrong password", "not-" + factories.PASSWORD)
    wrong = Client().post("/accounts/login/", {"username": "alice", "password": "not-" + factories.PASSWORD})
    assert wrong.status_code < 500

    assert "approval request" in logs.text  # the flow did log (authz.ciba.grant's "Issued tokens for approval request")
    seen.assert_absent_from(logs.text, "a log record")


def test_client_credentials_with_the_secret_in_the_body_logs_no_credential(logs: Capture, seen: Secrets) -> None:
    agent = new_agent(seen, client_credentials_enabled=True, token_endpoint_auth_method="client_secret_post")
    response = post_form(
        Client(),
        "/oauth/token/",
        {
            "grant_type": "client_credentials",
            "scope": "introspection",
            "client_id": agent.client_id,
            "client_secret": agent.client_secret,
        },
    )
    assert response.status_code == 200, response.content
    seen.add_tokens(response.json(), "client_credentials")

    seen.assert_absent_from(logs.text, "a log record")


def test_ping_with_the_automated_approval_endpoint_logs_no_credential(
    logs: Capture, seen: Secrets, approver: Any, automated: str
) -> None:
    seen.add("automated-approval secret", automated)
    with FakeAgentEndpoint(hang_seconds=5) as endpoint:
        agent = new_agent(
            seen, backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
        )
        notification_token = seen.add("client_notification_token", secrets.token_urlsafe(32))
        approval_request = ask(agent, seen, client_notification_token=notification_token)

        # The conformance suite's automated_ciba_approval_url: secret and auth_req_id in the query string.
        decided = Client().get(
            "/approvals/automated/", {"token": approval_request.auth_req_id, "type": "allow", "secret": automated}
        )
        assert decided.status_code == 200, decided.content
        (ping,) = endpoint.wait_for(1)
        assert ping.headers["authorization"] == f"Bearer {notification_token}"
        seen.add_tokens(agent.poll(approval_request.auth_req_id).json(), "ping")

        # The same with the secret as a Bearer token, and a wrong secret.
        second = ask(agent, seen, client_notification_token=notification_token)
        wrong = seen.add("a wrong automated secret", random_like(automated))
        refused = Client().post(
            "/approvals/automated/", {"token": second.auth_req_id, "type": "deny"}, HTTP_AUTHORIZATION=f"Bearer {wrong}"
        )
        assert refused.status_code == 403
        denied = Client().post(
            "/approvals/automated/",
            {"token": second.auth_req_id, "type": "deny"},
            HTTP_AUTHORIZATION=f"Bearer {automated}",
        )
        assert denied.status_code == 200, denied.content
        endpoint.wait_for(2)

    seen.assert_absent_from(logs.text, "a log record")


def test_push_logs_no_credential(logs: Capture, seen: Secrets, approver: Any) -> None:
    with FakeAgentEndpoint(hang_seconds=5) as endpoint:
        agent = new_agent(
            seen, backchannel_token_delivery_mode="push", backchannel_client_notification_endpoint=endpoint.url
        )
        notification_token = seen.add("client_notification_token", secrets.token_urlsafe(32))
        approval_request = ask(agent, seen, client_notification_token=notification_token)
        approve_by_link(approval_request, seen)
        (push,) = endpoint.wait_for(1)
        assert push.headers["authorization"] == f"Bearer {notification_token}"
        seen.add_tokens(push.json, "push")

    seen.assert_absent_from(logs.text, "a log record")


def test_registration_and_its_management_log_no_credential(logs: Capture, seen: Secrets) -> None:
    http = Client()
    initial = seen.add("initial access token", initial_access_token_create(expires_in=3600))
    metadata = {
        "client_name": "Expense bot",
        "grant_types": [CIBA, "refresh_token"],
        "backchannel_token_delivery_mode": "poll",
        "scope": "openid profile",
    }
    registered = http.post(
        "/oauth/register/",
        json.dumps(metadata),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {initial}",
    )
    assert registered.status_code == 201, registered.content
    body = registered.json()
    seen.add("registered client secret", body["client_secret"])
    token = seen.add("registration access token", body["registration_access_token"])
    path = urllib.parse.urlsplit(body["registration_client_uri"]).path

    assert http.get(path, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    update = {**metadata, "client_id": body["client_id"], "client_secret": body["client_secret"], "client_name": "Bot"}
    updated = http.put(path, json.dumps(update), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert updated.status_code == 200, updated.content
    rotated = seen.add("rotated registration access token", updated.json()["registration_access_token"])
    guessed = seen.add("a guessed registration access token", random_like(rotated))
    assert http.get(path, HTTP_AUTHORIZATION=f"Bearer {guessed}").status_code == 401
    assert http.delete(path, HTTP_AUTHORIZATION=f"Bearer {rotated}").status_code == 204

    seen.assert_absent_from(logs.text, "a log record")


def test_tracebacks_are_redacted_too(logs: Capture, seen: Secrets) -> None:
    secret = seen.add("client secret", secrets.token_urlsafe(48))
    try:
        raise ValueError(f"could not parse client_secret={secret}&grant_type=x")
    except ValueError:
        logging.getLogger("authz").exception("Unexpected failure with %s", {"client_secret": secret})
    assert "Unexpected failure" in logs.text and "ValueError" in logs.text
    seen.assert_absent_from(logs.text, "a logged traceback")


# --- the access logs --------------------------------------------------------------------------------------------------


def _hit_access_log_paths(base: str, seen: Secrets, approver: Any, automated: str) -> None:
    """Over real HTTP: the approver's link, the automated endpoint with its secret in the query string, a poll."""
    agent = new_agent(seen)
    approval_request = ask(agent, seen)
    link = link_of(approval_request, seen)
    opener = urllib.request.build_opener(_NoRedirect)
    for url in (
        f"{base}{link}",
        f"{base}{link}?utm_source=sms",
        f"{base}/approvals/automated/?"
        + urlencode({"token": approval_request.auth_req_id, "type": "allow", "secret": automated}),
    ):
        try:
            opener.open(url, timeout=30).close()
        except urllib.error.HTTPError as answer:
            assert answer.code < 500, (url, answer.code)
    basic = base64.b64encode(f"{agent.client_id}:{agent.client_secret}".encode()).decode()
    poll = urllib.request.Request(
        f"{base}/oauth/token/",
        data=urlencode({"grant_type": CIBA, "auth_req_id": approval_request.auth_req_id}).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": FORM},
    )
    with urllib.request.urlopen(poll, timeout=30) as answer:
        seen.add_tokens(json.loads(answer.read()), "poll over HTTP")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def wsgi_application() -> Any:
    """config.wsgi, loaded before the capture starts: loading it runs django.setup(), which configures logging anew."""
    return get_internal_wsgi_application()


def test_the_runserver_access_log_carries_no_credential(
    wsgi_application: Any, logs: Capture, seen: Secrets, approver: Any, automated: str
) -> None:
    seen.add("automated-approval secret", automated)
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(wsgi_application)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        _hit_access_log_paths(f"http://127.0.0.1:{server.server_address[1]}", seen, approver, automated)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    access = "\n".join(line for line in logs.lines if " django.server " in line)
    assert "/approvals/l/" in access and "/approvals/automated/" in access, access
    seen.assert_absent_from(access, "runserver's access log")
    seen.assert_absent_from(logs.text, "a log record")


def _compose_web_command() -> list[str]:
    text = (ROOT / "docker-compose.yml").read_text()
    match = re.search(r"^  web:\n(?:    .*\n)*?    command: (.+)$", text, re.M)
    assert match, "docker-compose.yml has no web command"
    return shlex.split(match[1])


@pytest.fixture
def gunicorn_as_composed(tmp_path: Path) -> Iterator[tuple[Callable[[], str], Callable[[], tuple[str, str]]]]:
    """docker-compose.yml's web command (bound to a free loopback port, one worker) on this test's database."""
    argv = _compose_web_command()
    assert argv[0] == "gunicorn", argv
    for option in ("--bind", "-b", "--workers", "-w"):  # a free loopback port and one worker instead
        while option in argv:
            at = argv.index(option)
            del argv[at : at + 2]
    database = connection.settings_dict
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CI": "true",
        "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
        "TEST_DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        ),
        "TEST_REDIS_URL": settings.CACHES["default"]["LOCATION"],
        "OIDC_RSA_PRIVATE_KEY": settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"],
        "APPROVALS_AUTOMATED_APPROVAL_SECRET": AUTOMATED_SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", *argv[1:]),
                *("--bind", "127.0.0.1:0", "--workers", "1", "--no-control-socket"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )

    def base_url() -> str:
        for _ in range(300):
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", stderr.read_text())
            if found:
                return found[1]
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited: {stderr.read_text()}")
            threading.Event().wait(0.1)
        raise AssertionError(f"gunicorn did not start: {stderr.read_text()}")

    def stop() -> tuple[str, str]:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        return stdout.read_text(), stderr.read_text()

    try:
        yield base_url, stop
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_gunicorn_as_composed_writes_an_access_log_without_credentials(
    gunicorn_as_composed: Any, seen: Secrets, approver: Any, automated: str
) -> None:
    base_url, stop = gunicorn_as_composed
    seen.add("automated-approval secret", automated)
    _hit_access_log_paths(base_url(), seen, approver, automated)
    access, errors = stop()

    assert "/approvals/l/" in access and "/approvals/automated/" in access and "/oauth/token/" in access, access
    seen.assert_absent_from(access, "gunicorn's access log")
    seen.assert_absent_from(errors, "gunicorn's error log")


def test_the_image_runs_gunicorn_as_compose_does() -> None:
    """config/Dockerfile's CMD (an image run without compose) takes the same gunicorn configuration."""
    (cmd,) = re.findall(r"^CMD (\[.*\])$", (ROOT / "config" / "Dockerfile").read_text(), re.M)
    composed = _compose_web_command()
    assert json.loads(cmd)[:2] == composed[:2]
    assert "--config" in composed and composed[composed.index("--config") + 1] in json.loads(cmd)
