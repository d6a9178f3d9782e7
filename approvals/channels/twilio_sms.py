"""SMS prompts through Twilio's Messages API, with the official client.

Settings: APPROVALS["TWILIO"] (ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER or MESSAGING_SERVICE_SID, API_BASE,
STATUS_CALLBACKS). API_BASE aims the real client at another origin (a loopback fake in tests and benchmarks)
through twilio's documented extension point, a custom `http_client`.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from approvals.channels.base import Channel, ChannelError, Destination, Prompt
from approvals.conf import approvals_settings
from approvals.models import Approver

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DEFAULT_API_BASE = "https://api.twilio.com"
# https://www.twilio.com/docs/api/errors: the number is invalid (21211), has opted out with STOP (21610) or cannot
# receive SMS (21614). Sending again cannot succeed.
DESTINATION_GONE_CODES = frozenset({21211, 21610, 21614})
# Delivery reports (status callbacks) that mean the same: unknown destination, landline, opted out.
UNDELIVERABLE_CALLBACK_CODES = frozenset({"21610", "30005", "30006"})

# GSM 03.38: a message in these characters fits 160 per segment (the extension characters count twice);
# anything else makes the whole message UCS-2, 70 per segment.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€")


def gsm_length(text: str) -> int | None:
    """Septets the text needs in the GSM 7-bit alphabet, or None if it needs UCS-2."""
    length = 0
    for char in text:
        if char in _GSM_BASIC:
            length += 1
        elif char in _GSM_EXTENDED:
            length += 2
        else:
            return None
    return length


def fits_one_segment(text: str) -> bool:
    septets = gsm_length(text)
    return septets <= 160 if septets is not None else len(text.encode("utf-16-le")) // 2 <= 70


def sms_text(prompt: Prompt) -> str:
    """Names the agent, shows the binding message and the link; shortens only the agent's name to fit a segment."""

    def compose(agent: str) -> str:
        if prompt.binding_message:
            return f'{agent} asks for your approval. Check it shows "{prompt.binding_message}": {prompt.link}'
        return f"{agent} asks for your approval: {prompt.link}"

    agent = prompt.agent_name
    text = compose(agent)
    while not fits_one_segment(text) and len(agent) > 12:
        agent = agent[: len(agent) - 4].rstrip() + "..."
        text = compose(agent)
    # The binding message and the link are never cut: when they alone need more, the message takes two segments.
    return text if fits_one_segment(text) else compose(prompt.agent_name)


class _OriginHttpClient(TwilioHttpClient):
    """Sends the client's requests to another origin (API_BASE) with the same paths."""

    def __init__(self, api_base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._origin = urlsplit(api_base)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)._replace(scheme=self._origin.scheme, netloc=self._origin.netloc)
        return super().request(method, parts.geturl(), *args, **kwargs)


@lru_cache(maxsize=4)
def _client(account_sid: str, auth_token: str, api_base: str, timeout: float) -> Client:
    # One client per process and configuration: it keeps a pooled HTTPS session to Twilio.
    if api_base.rstrip("/") == DEFAULT_API_BASE:
        http_client = TwilioHttpClient(timeout=timeout)
    else:
        http_client = _OriginHttpClient(api_base, timeout=timeout)
    return Client(account_sid, auth_token, http_client=http_client)


def status_callback_url(delivery_id: str) -> str:
    return f"{settings.PUBLIC_URL}{reverse('approvals:twilio-status', args=[delivery_id])}"


class TwilioSmsChannel(Channel):
    name: ClassVar[str] = "sms"

    def destinations(self, user: User) -> list[Destination]:
        approver = Approver.objects.filter(user=user).only("phone_number", "phone_disabled_at").first()
        if approver is None or not approver.phone_number or approver.phone_disabled_at is not None:
            return []
        number = approver.phone_number
        return [Destination(key=f"sms:{number}", label=f"{number[:-4]}····" if len(number) > 6 else number)]

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        config = approvals_settings.TWILIO
        client = _client(
            config["ACCOUNT_SID"],
            config["AUTH_TOKEN"],
            config["API_BASE"] or DEFAULT_API_BASE,
            float(approvals_settings.PROMPT_TIMEOUT_SECONDS),
        )
        options: dict[str, Any] = {"to": destination.key.removeprefix("sms:"), "body": sms_text(prompt)}
        if config["MESSAGING_SERVICE_SID"]:
            options["messaging_service_sid"] = config["MESSAGING_SERVICE_SID"]
        else:
            options["from_"] = config["FROM_NUMBER"]
        if config["STATUS_CALLBACKS"]:
            options["status_callback"] = status_callback_url(delivery_id)
        try:
            message = client.messages.create(**options)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _classify(exc.code, exc.status) from exc
        except requests.RequestException as exc:  # timeouts and connection errors
            raise ChannelError(f"Twilio unreachable: {type(exc).__name__}") from exc
        return message.sid or ""

    def disable(self, destination: Destination, *, reason: str, now: datetime) -> None:
        number = destination.key.removeprefix("sms:")
        Approver.objects.filter(phone_number=number, phone_disabled_at__isnull=True).update(
            phone_disabled_at=now, phone_disabled_reason=reason[:255]
        )


def _classify(code: int | None, status: int) -> ChannelError:
    # Twilio answers errors in two formats (twilio raises TwilioServiceException for RFC 9457 problem details).
    # Its message names the number; the code and status are enough for the record.
    description = f"Twilio error {code} (HTTP {status})"
    if code in DESTINATION_GONE_CODES:
        return ChannelError(description, destination_gone=True)
    if status == 429 or status >= 500:
        return ChannelError(description)
    # Other refusals (authentication, account permissions, a bad sender) are configuration errors: retrying will
    # not help and the person's number is not at fault.
    return ChannelError(description, permanent=True)
