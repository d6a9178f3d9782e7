"""A channel for tests: prompts land in `outbox`, like Django's locmem mail backend.

`failures` lets a test make the next sends fail the way a provider would (a ChannelError per send, in order), so
the orchestration's handling of permanent and transient errors can be exercised without a network.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from approvals.channels.base import Channel, ChannelError, Destination, Prompt

if TYPE_CHECKING:
    from django.contrib.auth.models import User

outbox: list[Prompt] = []
failures: list[ChannelError] = []
disabled: list[tuple[str, str]] = []


class LocmemChannel(Channel):
    name: ClassVar[str] = "locmem"

    def destinations(self, user: User) -> list[Destination]:
        gone = {key for key, _reason in disabled}
        return [destination for destination in super().destinations(user) if destination.key not in gone]

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        if failures:
            raise failures.pop(0)
        outbox.append(prompt)
        return f"locmem-{len(outbox)}"

    def disable(self, destination: Destination, *, reason: str, now: datetime) -> None:
        disabled.append((destination.key, reason))
