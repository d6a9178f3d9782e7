"""Helpers for the prompt channel tests: settings that aim the real channels at the loopback fakes, and requests."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

from django.core.management import call_command

from approvals import services
from approvals.models import ApprovalRequest, Approver
from tests import factories
from tests.fakes.push_service import FakePushService
from tests.fakes.twilio import FakeTwilio

SMS = "approvals.channels.twilio_sms.TwilioSmsChannel"
WEBPUSH = "approvals.channels.webpush.WebPushChannel"
LOCMEM = "approvals.channels.locmem.LocmemChannel"
CONSOLE = "approvals.channels.console.ConsoleChannel"
FROM_NUMBER = "+15017122661"
PHONE = "+14155550123"
SUBJECT = "mailto:ops@example.com"


def vapid_keys() -> tuple[str, str]:
    """(private, public) as `manage.py generate_vapid_keys` prints them."""
    out = StringIO()
    call_command("generate_vapid_keys", stdout=out)
    keys = json.loads(out.getvalue())
    return keys["VAPID_PRIVATE_KEY"], keys["VAPID_PUBLIC_KEY"]


def configure(settings: Any, channels: list[str], **approvals: Any) -> None:
    settings.APPROVALS = {**settings.APPROVALS, "PROMPT_CHANNELS": channels, **approvals}


def twilio_config(settings: Any, fake: FakeTwilio, **overrides: Any) -> dict[str, Any]:
    return {
        **settings.APPROVALS.get("TWILIO", {}),
        "ACCOUNT_SID": fake.account_sid,
        "AUTH_TOKEN": fake.auth_token,
        "FROM_NUMBER": FROM_NUMBER,
        "MESSAGING_SERVICE_SID": "",
        "API_BASE": fake.base_url,
        "STATUS_CALLBACKS": True,
        **overrides,
    }


def webpush_config(settings: Any, keys: tuple[str, str], **overrides: Any) -> dict[str, Any]:
    return {
        **settings.APPROVALS["WEBPUSH"],
        "VAPID_PRIVATE_KEY": keys[0],
        "VAPID_PUBLIC_KEY": keys[1],
        "VAPID_SUBJECT": SUBJECT,
        "ALLOW_LOOPBACK_HTTP": True,
        **overrides,
    }


def use_sms(settings: Any, fake: FakeTwilio, *, timeout: float = 5, **twilio: Any) -> None:
    configure(settings, [SMS], TWILIO=twilio_config(settings, fake, **twilio), PROMPT_TIMEOUT_SECONDS=timeout)


def use_webpush(settings: Any, fake: FakePushService, keys: tuple[str, str], *, timeout: float = 5) -> None:
    configure(settings, [WEBPUSH], WEBPUSH=webpush_config(settings, keys), PROMPT_TIMEOUT_SECONDS=timeout)


def make_person(username: str = "alice", *, phone: str = PHONE) -> Approver:
    return factories.make_approver(username, email=f"{username}@example.com", phone=phone)


def make_request(
    approver: Approver, *, agent_name: str = "Travel agent", binding_message: str = "Pay 420 EUR to ACME", **kwargs: Any
) -> ApprovalRequest:
    application, _secret = factories.make_agent_client(name=agent_name)
    return services.approval_request_create(
        client=application,
        user=approver.user,
        scope="openid",
        hint_type="login_hint",
        binding_message=binding_message,
        **factories.as_bc_authorize(**kwargs),
    )
