"""Client secrets: stored with a fast salted SHA-256, checked without ever touching the slow password hashers."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

import pytest
from django.contrib.auth.hashers import BasePasswordHasher, PBKDF2PasswordHasher, check_password, make_password
from django.test import Client
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals import services
from approvals.models import ApprovalRequest
from authz.clients.hashers import ClientSecretHasher, verify_client_secret
from tests import factories
from tests.conftest import CIBA, FORM, Agent

pytestmark = pytest.mark.django_db

CLIENT_SECRET_HASHER = "authz.clients.hashers.ClientSecretHasher"


class TripwireHasher(BasePasswordHasher):
    """Stands in for the slow default password hasher: any use of it on the client path fails the test."""

    algorithm = "tripwire_slow"
    calls: ClassVar[list[str]] = []

    def _trip(self, method: str) -> None:
        type(self).calls.append(method)
        raise AssertionError(f"the slow password hasher was used ({method})")

    def encode(self, password, salt):
        self._trip("encode")

    def decode(self, encoded):
        self._trip("decode")

    def verify(self, password, encoded):
        self._trip("verify")

    def safe_summary(self, encoded):
        self._trip("safe_summary")

    def must_update(self, encoded):
        self._trip("must_update")

    def harden_runtime(self, password, encoded):
        self._trip("harden_runtime")


class TripwirePBKDF2Hasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 hasher (same algorithm name), recording every time it does PBKDF2 work."""

    calls: ClassVar[list[str]] = []

    def encode(self, password, salt, iterations=None):
        type(self).calls.append("encode")
        return super().encode(password, salt, iterations)

    def verify(self, password, encoded):
        type(self).calls.append("verify")
        return super().verify(password, encoded)

    def harden_runtime(self, password, encoded):
        type(self).calls.append("harden_runtime")
        return super().harden_runtime(password, encoded)


@pytest.fixture
def tripwire(settings):
    """Make the tripwire the default password hasher. Users must be created before this fixture is used."""
    TripwireHasher.calls.clear()
    settings.PASSWORD_HASHERS = [f"{__name__}.TripwireHasher", CLIENT_SECRET_HASHER]
    yield TripwireHasher.calls
    TripwireHasher.calls.clear()


def impostor(agent: Agent, *, client_id: str | None = None, secret: str | None = None) -> Agent:
    return Agent(client_id or agent.client_id, secret or agent.client_secret, Client(), agent.application)


def post_form(path: str, params: dict[str, str], **extra):
    return Client().post(path, urlencode(params), content_type=FORM, **extra)


def test_tripwires_catch_the_slow_hashers(settings, tripwire):
    # Guards the tests below against passing vacuously: the tripwire really is the default hasher.
    with pytest.raises(AssertionError):
        make_password("a person's password")
    assert tripwire == ["encode"]

    settings.PASSWORD_HASHERS = [f"{__name__}.TripwirePBKDF2Hasher", CLIENT_SECRET_HASHER]
    TripwirePBKDF2Hasher.calls.clear()
    stored = PBKDF2PasswordHasher().encode("secret", "somesalt", iterations=1000)
    assert check_password("secret", stored)
    assert "verify" in TripwirePBKDF2Hasher.calls


def test_client_secret_is_stored_with_the_fast_hasher(agent):
    Application = get_application_model()
    stored = Application.objects.get(pk=agent.application.pk).client_secret
    assert stored.startswith("countersign_sha256$")
    assert agent.client_secret not in stored
    assert not stored.startswith("pbkdf2")
    assert ClientSecretHasher().verify(agent.client_secret, stored)


def test_client_secret_is_hashed_on_every_save(agent):
    Application = get_application_model()
    application = Application.objects.get(pk=agent.application.pk)
    new_secret = generate_client_secret()
    application.client_secret = new_secret
    application.save()
    stored = Application.objects.get(pk=application.pk).client_secret
    assert stored.startswith("countersign_sha256$")
    assert new_secret not in stored
    assert verify_client_secret(new_secret, stored)
    assert not verify_client_secret(agent.client_secret, stored)


def test_same_secret_gets_a_different_salt(db):
    first = factories.make_agent_client(name="one")[0].client_secret
    second = factories.make_agent_client(name="two")[0].client_secret
    assert first.split("$")[1] != second.split("$")[1]


def test_verify_client_secret_checks_the_right_secret_only(agent):
    stored = agent.application.client_secret
    assert verify_client_secret(agent.client_secret, stored) is True
    assert verify_client_secret(agent.client_secret[:-1], stored) is False
    assert verify_client_secret(agent.client_secret + "x", stored) is False
    assert verify_client_secret("", stored) is False
    assert verify_client_secret(agent.client_secret.upper(), stored) is False


def test_verify_client_secret_rejects_a_pbkdf2_stored_secret(settings):
    TripwirePBKDF2Hasher.calls.clear()
    settings.PASSWORD_HASHERS = [f"{__name__}.TripwirePBKDF2Hasher", CLIENT_SECRET_HASHER]
    secret = generate_client_secret()
    stored = PBKDF2PasswordHasher().encode(secret, "somesalt", iterations=1000)
    assert verify_client_secret(secret, stored) is False
    assert TripwirePBKDF2Hasher.calls == []


def test_verify_client_secret_on_a_plain_stored_secret():
    assert verify_client_secret("s3cret-value", "s3cret-value") is True
    assert verify_client_secret("s3cret-valuf", "s3cret-value") is False
    assert verify_client_secret("", "") is False


def test_pbkdf2_stored_secret_is_refused_at_the_endpoint_without_running_pbkdf2(agent, approver, settings):
    TripwirePBKDF2Hasher.calls.clear()
    settings.PASSWORD_HASHERS = [f"{__name__}.TripwirePBKDF2Hasher", CLIENT_SECRET_HASHER]
    Application = get_application_model()
    stored = PBKDF2PasswordHasher().encode(agent.client_secret, "somesalt", iterations=1000)
    Application.objects.filter(pk=agent.application.pk).update(client_secret=stored)

    response = agent.bc_authorize(scope="openid", login_hint="alice")

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert TripwirePBKDF2Hasher.calls == []


def test_slow_hasher_is_never_used_to_authenticate_clients(agent, approver, tripwire):
    # A valid secret: acknowledgement, a pending poll, and the token response.
    ack = agent.bc_authorize(scope="openid profile", login_hint="alice")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    pending = agent.poll(auth_req_id)
    assert pending.json()["error"] == "authorization_pending"
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    assert services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)
    tokens = agent.poll(auth_req_id)
    assert tokens.status_code == 200, tokens.content
    assert agent.poll(auth_req_id).json()["error"] == "invalid_grant"

    # DOT's endpoints authenticate through the same code.
    introspection = agent.post("/oauth/introspect/", {"token": tokens.json()["access_token"]})
    assert introspection.status_code == 200 and introspection.json()["active"] is True

    # A wrong secret and an unknown client_id, over Basic and in the body.
    wrong = impostor(agent, secret="not-the-secret")
    unknown = impostor(agent, client_id="no-such-client")
    for other in (wrong, unknown):
        assert other.bc_authorize(scope="openid", login_hint="alice").status_code == 401
        assert other.poll(auth_req_id).status_code == 401
    for client_id, secret in ((agent.client_id, "not-the-secret"), ("no-such-client", agent.client_secret)):
        body = {"client_id": client_id, "client_secret": secret}
        assert post_form("/oauth/bc-authorize/", {**body, "scope": "openid", "login_hint": "alice"}).status_code == 401
        assert post_form("/oauth/token/", {**body, "grant_type": CIBA, "auth_req_id": auth_req_id}).status_code == 401

    assert tripwire == []


def test_client_secret_post_client_never_uses_the_slow_hasher(make_agent, approver, tripwire):
    agent = make_agent(token_endpoint_auth_method="client_secret_post")
    body = {"client_id": agent.client_id, "client_secret": agent.client_secret}
    ack = post_form("/oauth/bc-authorize/", {**body, "scope": "openid", "login_hint": "alice"})
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)
    tokens = post_form("/oauth/token/", {**body, "grant_type": CIBA, "auth_req_id": auth_req_id})
    assert tokens.status_code == 200, tokens.content
    assert tripwire == []


def test_creating_a_client_never_uses_the_slow_hasher(tripwire):
    application, secret = factories.make_agent_client(name="Created under the tripwire")
    assert application.client_secret.startswith("countersign_sha256$")
    assert verify_client_secret(secret, application.client_secret)
    assert tripwire == []
