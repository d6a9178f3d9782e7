"""The prompt channel interface: one module per channel, chosen by dotted path in APPROVALS["PROMPT_CHANNELS"].

A channel knows where it can reach a person (`destinations`), sends one prompt to one destination (`send`), and
forgets a destination that is gone for good (`disable`). The orchestration (approvals.prompts) writes a delivery
row around every call, decides about retries and falls back to the next channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from approvals.agents import AgentProfile
from approvals.links import link_url
from approvals.text import agent_label

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from approvals.models import ApprovalRequest


class ChannelError(Exception):
    """A prompt that could not be sent.

    Transient errors (timeouts, 5xx, 429) are retried with backoff. Permanent ones are not; `destination_gone`
    (an invalid or unsubscribed number, an expired push subscription) also disables the destination.
    """

    def __init__(self, message: str, *, permanent: bool = False, destination_gone: bool = False) -> None:
        super().__init__(message)
        self.destination_gone = destination_gone
        self.permanent = permanent or destination_gone


@dataclass(frozen=True)
class Destination:
    # Stable across attempts ("sms:+14155550123", "webpush:17"): a destination that already took this request's
    # prompt is never sent it again.
    key: str
    label: str
    subscription_id: int | None = None


@dataclass(frozen=True)
class Prompt:
    """What a channel may tell the approver: never the auth_req_id, which is the agent's to redeem."""

    approval_request_id: str
    username: str
    agent_name: str
    binding_message: str
    scopes: tuple[str, ...]
    link: str
    expires_at: datetime

    @classmethod
    def for_request(cls, approval_request: ApprovalRequest, agent: AgentProfile | None = None) -> Prompt:
        return cls(
            approval_request_id=str(approval_request.pk),
            username=approval_request.user.get_username(),
            # Every channel's text names the agent from here, with the unverified mark (approvals.text).
            agent_name=agent_label(approval_request.client, agent),
            binding_message=approval_request.binding_message,
            scopes=tuple(approval_request.scopes),
            link=link_url(approval_request),
            expires_at=approval_request.expires_at,
        )


class Channel:
    """Base class for prompt channels. `send` returns once the provider has accepted the prompt."""

    name: ClassVar[str] = "base"

    def destinations(self, user: User) -> list[Destination]:
        """Where this channel can reach the user now (enabled destinations only)."""
        return [Destination(key=f"{self.name}:{user.pk}", label=user.get_username())]

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        """Send the prompt; return the provider's id for it ("" if none). Raise ChannelError on failure."""
        raise NotImplementedError

    def disable(self, destination: Destination, *, reason: str, now: datetime) -> None:
        """The destination is gone for good (ChannelError.destination_gone)."""

    def succeeded(self, destination: Destination, *, now: datetime) -> None:
        """The provider accepted a prompt for the destination."""
