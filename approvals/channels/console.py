"""The embedded default: print the prompt, so a developer can follow the link from the terminal."""

from __future__ import annotations

import sys
from typing import ClassVar, TextIO

from approvals.channels.base import Channel, Destination, Prompt


class ConsoleChannel(Channel):
    name: ClassVar[str] = "console"
    # None: sys.stdout as it is at send time, not at import (a worker or a test runner may have replaced it since).
    stream: ClassVar[TextIO | None] = None

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
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
        stream = self.stream or sys.stdout
        stream.write("\n".join(lines))
        stream.flush()
        return ""
