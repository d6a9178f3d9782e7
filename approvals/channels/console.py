"""The embedded default: print the prompt, so a developer can follow the link from the terminal."""

from __future__ import annotations

import sys
from typing import ClassVar

from .base import Channel, Prompt


class ConsoleChannel(Channel):
    name: ClassVar[str] = "console"

    def send(self, prompt: Prompt) -> None:
        lines = [
            "",
            "=" * 72,
            f"Approval prompt for {prompt.username}",
            f"  Agent:           {prompt.agent_name}",
            f"  Binding message: {prompt.binding_message or '(none)'}",
            f"  Access:          {' '.join(prompt.scopes)}",
            f"  Expires:         {prompt.expires_at:%Y-%m-%d %H:%M:%S %Z}",
            f"  Open:            {prompt.link}",
            "=" * 72,
            "",
        ]
        sys.stdout.write("\n".join(lines))
        sys.stdout.flush()
