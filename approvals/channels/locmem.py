"""A channel for tests: prompts land in `outbox`, like Django's locmem mail backend."""

from __future__ import annotations

from typing import ClassVar

from .base import Channel, Prompt

outbox: list[Prompt] = []


class LocmemChannel(Channel):
    name: ClassVar[str] = "locmem"

    def send(self, prompt: Prompt) -> None:
        outbox.append(prompt)
