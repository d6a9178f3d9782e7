"""Issue 15, item 3 (c, d): client names that lie.

client_name was only stripped: "Countersign security check", right-to-left overrides, newlines, NUL and 255
characters were accepted, and nothing told the approver that a self-registered client is unverified. Names now
follow the binding-message rule (approvals.text, one validator on the model field, so registration, the admin and
create_agent_client all apply it) and may not claim to be the server; unverified clients are marked on the page and
in every prompt text (approvals.channels.base.Prompt).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from oauth2_provider.models import get_application_model

from approvals.channels.base import Prompt
from approvals.channels.twilio_sms import sms_text
from approvals.models import ApprovalRequest
from authz.models import CibaClient
from tests import factories

pytestmark = pytest.mark.django_db

REGISTER = "/oauth/register/"
CIBA = "urn:openid:params:grant-type:ciba"
BAD_NAMES = [
    "Countersign security check",
    "COUNTERSIGN",
    "Сountersign",  # Cyrillic capital Es
    "C o u n t e r s i g n",
    "Ｃｏｕｎｔｅｒｓｉｇｎ",  # fullwidth, folded by NFKC
    "Line1\nCountersign: your account is locked",
    "Line1\nyour account is locked",
    "ACME\u202etxt.exe",
    "ACME\u200b",
    "ACME\x00",
    "A" * 65,
    "Bank 🏦",
    "ACME" + "\u0301" * 12,  # stacked combining marks spill over the page's other lines
]


def _register(name: str):
    body = {"client_name": name, "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll", "scope": "openid"}
    return Client().post(REGISTER, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_registration_refuses_lying_names(name: str, settings) -> None:
    settings.REGISTRATION_MODE = "open"
    response = _register(name)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_client_metadata"
    assert body["error_description"].isascii() and body["error_description"].isprintable()
    assert not get_application_model().objects.exists()


@pytest.mark.parametrize("name", ["Expense bot", "Société Générale agent", "株式会社 bot", "R2-D2 (travel)"])
def test_registration_accepts_plain_names(name: str, settings) -> None:
    settings.REGISTRATION_MODE = "open"
    assert _register(name).status_code == 201


def test_create_agent_client_refuses_lying_names() -> None:
    with pytest.raises(CommandError, match="name of this server"):
        call_command("create_agent_client", "--name", "Countersign admin")
    assert not get_application_model().objects.exists()


def test_model_field_refuses_lying_names() -> None:
    application, _secret = factories.make_agent_client(name="Fine")
    field = application._meta.get_field("name")
    assert any(getattr(v, "__name__", "") == "validate_client_name" for v in field.validators)
    application.name = "Countersign\u202e"
    with pytest.raises(ValidationError):
        application.full_clean()


def test_unverified_client_is_marked_on_page_and_in_prompts(settings, approver, approver_client) -> None:
    settings.REGISTRATION_MODE = "open"
    response = _register("Expense bot")
    assert response.status_code == 201
    application = get_application_model().objects.get(client_id=response.json()["client_id"])
    request = factories.make_approval_request(approver, SimpleNamespace(application=application))
    request = ApprovalRequest.objects.select_related("client__ciba", "user").get(pk=request.pk)
    prompt = Prompt.for_request(request)
    assert prompt.agent_name == "(unverified) Expense bot"
    assert sms_text(prompt).startswith("(unverified) Expense bot asks")
    page = approver_client.get(f"/approvals/{request.pk}/").content.decode()
    assert "Unverified agent:" in page
    # Once an administrator verifies it, the mark goes.
    CibaClient.objects.filter(application=application).update(website="https://expenses.example", website_verified=True)
    request = ApprovalRequest.objects.select_related("client__ciba", "user").get(pk=request.pk)
    assert Prompt.for_request(request).agent_name == "Expense bot"
    assert "Unverified agent:" not in approver_client.get(f"/approvals/{request.pk}/").content.decode()


def test_admin_created_clients_are_not_marked(approver, approver_client, agent) -> None:
    request = factories.make_approval_request(approver, agent)
    request = ApprovalRequest.objects.select_related("client__ciba", "user").get(pk=request.pk)
    assert Prompt.for_request(request).agent_name == "Travel agent"
    assert "Unverified agent:" not in approver_client.get(f"/approvals/{request.pk}/").content.decode()
