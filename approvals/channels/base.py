"""The prompt channel interface: one module per channel, chosen by dotted path in APPROVALS["PROMPT_CHANNELS"]."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from django.conf import settings
from django.urls import reverse

if TYPE_CHECKING:
    from ..models import ApprovalRequest


class ChannelError(Exception):
    """A prompt that could not be sent. Permanent errors are not retried (the destination is gone)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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
    def for_request(cls, approval_request: ApprovalRequest) -> Prompt:
        path = reverse("approvals:detail", args=[approval_request.pk])
        return cls(
            approval_request_id=str(approval_request.pk),
            username=approval_request.user.get_username(),
            agent_name=approval_request.client.name or approval_request.client.client_id,
            binding_message=approval_request.binding_message,
            scopes=tuple(approval_request.scopes),
            link=f"{settings.PUBLIC_URL}{path}",
            expires_at=approval_request.expires_at,
        )


class Channel:
    """Base class for prompt channels. `send` returns when the provider accepted the prompt."""

    name: ClassVar[str] = "base"

    def send(self, prompt: Prompt) -> None:
        raise NotImplementedError
