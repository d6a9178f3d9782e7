"""System checks for the prompt channels (approvals/checks.py), and the VAPID key pair generate_vapid_keys prints."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from py_vapid import Vapid
from pywebpush import webpush

from approvals.checks import vapid_public_key_for
from tests import prompting
from tests.fakes.push_service import FakePushService

PROMPT_CHECKS = {f"countersign.E10{n}" for n in range(1, 8)}
TWILIO = {
    "ACCOUNT_SID": "AC" + "a" * 32,
    "AUTH_TOKEN": "token",
    "FROM_NUMBER": "+15017122661",
    "MESSAGING_SERVICE_SID": "",
}


def prompt_check_ids() -> list[str]:
    return sorted(message.id for message in run_checks() if message.id in PROMPT_CHECKS)


@pytest.fixture
def keys() -> tuple[str, str]:
    return prompting.vapid_keys()


@pytest.fixture
def complete(settings: Any, keys: tuple[str, str]) -> Any:
    """Every channel enabled and completely configured for production."""
    settings.DEBUG = False
    prompting.configure(
        settings,
        [prompting.SMS, prompting.WEBPUSH, prompting.CONSOLE],
        TWILIO=TWILIO,
        WEBPUSH={
            "VAPID_PRIVATE_KEY": keys[0],
            "VAPID_PUBLIC_KEY": keys[1],
            "VAPID_SUBJECT": "mailto:security@example.com",
            "ALLOW_LOOPBACK_HTTP": False,
        },
        # Production: no http to loopback for client URLs (the test settings allow it for the fakes).
        OUTBOUND_ALLOW_LOOPBACK_HTTP=False,
    )
    return settings


def change(settings: Any, **approvals: Any) -> None:
    current = settings.APPROVALS
    for name in ("TWILIO", "WEBPUSH"):
        if name in approvals:
            approvals[name] = {**current[name], **approvals[name]}
    settings.APPROVALS = {**current, **approvals}


def test_complete_configuration_passes(complete: Any) -> None:
    assert prompt_check_ids() == []


def test_https_origin_subject_passes(complete: Any) -> None:
    change(complete, WEBPUSH={"VAPID_SUBJECT": "https://example.com"})

    assert prompt_check_ids() == []


def test_loopback_http_with_debug_on_passes(complete: Any) -> None:
    complete.DEBUG = True
    change(complete, WEBPUSH={"ALLOW_LOOPBACK_HTTP": True})

    assert prompt_check_ids() == []


def test_unimportable_channel_is_an_error(complete: Any) -> None:
    change(complete, PROMPT_CHANNELS=[prompting.LOCMEM, "approvals.channels.pager.PagerChannel"])

    errors = [m for m in run_checks() if m.id in PROMPT_CHECKS]

    assert [e.id for e in errors] == ["countersign.E101"]
    assert "approvals.channels.pager.PagerChannel" in errors[0].msg


def test_no_channel_is_an_error(complete: Any) -> None:
    change(complete, PROMPT_CHANNELS=[])

    assert prompt_check_ids() == ["countersign.E102"]


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"ACCOUNT_SID": ""}, "ACCOUNT_SID"),
        ({"AUTH_TOKEN": ""}, "AUTH_TOKEN"),
        ({"FROM_NUMBER": ""}, "FROM_NUMBER or MESSAGING_SERVICE_SID"),
    ],
)
def test_sms_without_twilio_configuration_is_an_error(complete: Any, missing: dict[str, str], named: str) -> None:
    change(complete, TWILIO=missing)

    [error] = [m for m in run_checks() if m.id in PROMPT_CHECKS]

    assert error.id == "countersign.E103" and named in error.msg


def test_messaging_service_is_a_sender(complete: Any) -> None:
    change(complete, TWILIO={"FROM_NUMBER": "", "MESSAGING_SERVICE_SID": "MG" + "b" * 32})

    assert prompt_check_ids() == []


def test_twilio_configuration_is_not_needed_without_sms(complete: Any) -> None:
    change(complete, PROMPT_CHANNELS=[prompting.WEBPUSH], TWILIO={"ACCOUNT_SID": "", "AUTH_TOKEN": ""})

    assert prompt_check_ids() == []


@pytest.mark.parametrize("missing", ["VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"])
def test_webpush_without_keys_is_an_error(complete: Any, missing: str) -> None:
    change(complete, WEBPUSH={missing: ""})

    assert prompt_check_ids() == ["countersign.E104"]


def test_vapid_keys_are_not_needed_without_webpush(complete: Any) -> None:
    change(complete, PROMPT_CHANNELS=[prompting.SMS], WEBPUSH={"VAPID_PRIVATE_KEY": "", "VAPID_SUBJECT": ""})

    assert prompt_check_ids() == []


def test_public_key_of_another_pair_is_an_error(complete: Any) -> None:
    _other_private, other_public = prompting.vapid_keys()
    change(complete, WEBPUSH={"VAPID_PUBLIC_KEY": other_public})

    assert prompt_check_ids() == ["countersign.E105"]


@pytest.mark.parametrize(
    "private_key",
    [
        pytest.param("not a key", id="not-base64"),
        pytest.param("AAAA", id="too-short"),
        pytest.param("A" * 43, id="zero-scalar"),
        pytest.param("_" * 43, id="above-the-curve-order"),
    ],
)
def test_malformed_private_key_is_an_error(complete: Any, private_key: str) -> None:
    change(complete, WEBPUSH={"VAPID_PRIVATE_KEY": private_key})

    assert prompt_check_ids() == ["countersign.E105"]


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("", id="empty"),
        pytest.param("ops@example.com", id="bare-address"),
        pytest.param("http://example.com", id="http"),
        pytest.param("mailto:ops", id="mailto-without-domain"),
        pytest.param("https://example.com/contact", id="https-with-path"),
    ],
)
def test_bad_subject_is_an_error(complete: Any, subject: str) -> None:
    change(complete, WEBPUSH={"VAPID_SUBJECT": subject})

    assert prompt_check_ids() == ["countersign.E106"]


def test_loopback_http_with_debug_off_is_an_error(complete: Any) -> None:
    change(complete, WEBPUSH={"ALLOW_LOOPBACK_HTTP": True})

    assert prompt_check_ids() == ["countersign.E107"]


def test_everything_wrong_at_once_reports_each_problem(complete: Any) -> None:
    change(
        complete,
        TWILIO={"AUTH_TOKEN": ""},
        WEBPUSH={"VAPID_PRIVATE_KEY": "", "VAPID_SUBJECT": "nobody", "ALLOW_LOOPBACK_HTTP": True},
    )

    assert prompt_check_ids() == ["countersign.E103", "countersign.E104", "countersign.E106", "countersign.E107"]


# --- generate_vapid_keys ----------------------------------------------------------------------------------------------


def generated() -> dict[str, str]:
    out = StringIO()
    call_command("generate_vapid_keys", stdout=out)
    return json.loads(out.getvalue())


def test_generated_pair_matches_and_is_new_each_time() -> None:
    first, second = generated(), generated()

    assert set(first) == {"VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"}
    assert vapid_public_key_for(first["VAPID_PRIVATE_KEY"]) == first["VAPID_PUBLIC_KEY"]
    assert len(first["VAPID_PUBLIC_KEY"]) == 87 and "=" not in first["VAPID_PUBLIC_KEY"]  # 65 bytes, base64url
    assert first != second


def test_generated_pair_signs_pushes_a_push_service_accepts() -> None:
    keys = generated()
    assert Vapid.from_string(private_key=keys["VAPID_PRIVATE_KEY"]).public_key is not None

    with FakePushService(expected_vapid_public_key=keys["VAPID_PUBLIC_KEY"]) as push:
        subscription = push.subscribe()
        response = webpush(
            subscription.info,
            data="{}",
            vapid_private_key=keys["VAPID_PRIVATE_KEY"],
            vapid_claims={"sub": "mailto:ops@example.com"},
            timeout=5,
        )

        assert response.status_code == 201
        [received] = push.wait_for_pushes(1, timeout=2)
        assert received.vapid_public_key == keys["VAPID_PUBLIC_KEY"] and push.rejected == []
