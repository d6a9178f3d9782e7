"""System checks: a prompt channel that is enabled must be completely configured (house style: fail fast)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.utils.module_loading import import_string
from py_vapid import Vapid, VapidException

from approvals.conf import approvals_settings


@register(Tags.compatibility)
def check_prompt_channels(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    names = []
    for path in approvals_settings.PROMPT_CHANNELS:
        try:
            names.append(import_string(path).name)
        except ImportError as exc:
            errors.append(Error(f"Prompt channel {path} cannot be imported: {exc}", id="countersign.E101"))
    if "sms" in names:
        errors += _check_twilio()
    if "webpush" in names:
        errors += _check_webpush()
    if not names and not errors:
        errors.append(
            Error("No prompt channel is configured.", hint="Set APPROVALS_PROMPT_CHANNELS.", id="countersign.E102")
        )
    automated = approvals_settings.AUTOMATED_APPROVAL_SECRET
    if automated and not settings.DEBUG and not approvals_settings.AUTOMATED_APPROVAL_IN_PRODUCTION:
        errors.append(
            Error(
                "The automated approval endpoint is on with DEBUG off.",
                hint="It decides requests without the person. For a certification deployment set "
                "APPROVALS_AUTOMATED_APPROVAL_IN_PRODUCTION=true; otherwise unset APPROVALS_AUTOMATED_APPROVAL_SECRET.",
                id="countersign.E109",
            )
        )
    if automated and len(automated) < 32:
        errors.append(
            Error(
                "APPROVALS_AUTOMATED_APPROVAL_SECRET is shorter than 32 characters.",
                hint="Anyone who guesses it can approve requests; use a long random value.",
                id="countersign.E110",
            )
        )
    if approvals_settings.OUTBOUND_ALLOW_LOOPBACK_HTTP and not settings.DEBUG:
        errors.append(
            Error(
                "APPROVALS_OUTBOUND_ALLOW_LOOPBACK_HTTP is on with DEBUG off.",
                hint="It lets clients aim callbacks at this machine; it exists for local fakes only.",
                id="countersign.E108",
            )
        )
    return errors


def _check_twilio() -> list[Error]:
    config = approvals_settings.TWILIO
    errors = []
    missing = [name for name in ("ACCOUNT_SID", "AUTH_TOKEN") if not config[name]]
    if not (config["FROM_NUMBER"] or config["MESSAGING_SERVICE_SID"]):
        missing.append("FROM_NUMBER or MESSAGING_SERVICE_SID")
    if missing:
        errors.append(
            Error(
                f"The SMS channel is enabled but Twilio is not configured: {', '.join(missing)} missing.",
                hint="Set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN_FILE) and TWILIO_FROM_NUMBER "
                "or TWILIO_MESSAGING_SERVICE_SID.",
                id="countersign.E103",
            )
        )
    return errors


def _check_webpush() -> list[Error]:
    config = approvals_settings.WEBPUSH
    errors = []
    if not config["VAPID_PRIVATE_KEY"] or not config["VAPID_PUBLIC_KEY"]:
        errors.append(
            Error(
                "The Web Push channel is enabled but the VAPID key pair is not configured.",
                hint="Run `python manage.py generate_vapid_keys` and set VAPID_PRIVATE_KEY and VAPID_PUBLIC_KEY.",
                id="countersign.E104",
            )
        )
    elif vapid_public_key_for(config["VAPID_PRIVATE_KEY"]) != config["VAPID_PUBLIC_KEY"]:
        errors.append(
            Error(
                "VAPID_PUBLIC_KEY is not the public half of VAPID_PRIVATE_KEY (or the private key is malformed).",
                hint="Browsers subscribe with the public key; pushes signed with another key are refused.",
                id="countersign.E105",
            )
        )
    subject = config["VAPID_SUBJECT"]
    if not (subject.startswith("mailto:") or subject.startswith("https://")) or not _vapid_signs_subject(subject):
        errors.append(
            Error(
                "VAPID_SUBJECT must be a mailto: or https: URL (RFC 8292 §2.1) that py_vapid accepts.",
                hint="For example mailto:security@example.com or https://example.com (an https subject without a "
                "path); push services contact it about problems.",
                id="countersign.E106",
            )
        )
    if config["ALLOW_LOOPBACK_HTTP"] and not settings.DEBUG:
        errors.append(
            Error(
                "WEBPUSH_ALLOW_LOOPBACK_HTTP is on with DEBUG off.",
                hint="It exists for local fakes; in production push endpoints must be https push services.",
                id="countersign.E107",
            )
        )
    return errors


def _vapid_signs_subject(subject: str) -> bool:
    """Whether pywebpush will sign claims with this subject: py_vapid is stricter than RFC 8292 (no path in an https
    subject, a domain in a mailto:), and refuses at every send otherwise."""
    vapid = Vapid()
    vapid.generate_keys()
    try:
        vapid.sign({"sub": subject, "aud": "https://push.example.com"})
    except VapidException:
        return False
    return True


def vapid_public_key_for(private_key: str) -> str | None:
    """The base64url uncompressed public point for a raw base64url P-256 private key, or None if malformed."""
    try:
        raw = base64.urlsafe_b64decode(private_key + "=" * (-len(private_key) % 4))
        if len(raw) != 32:
            return None
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (binascii.Error, ValueError):
        return None
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()
