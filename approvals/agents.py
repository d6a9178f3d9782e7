"""What the human side shows and does about an agent that is not in DOT's Application: its website and whether an
administrator verified it, the prompt channels it chose, and how the types of authorization details it may send are
titled and displayed. The OAuth side owns those records; at start-up it registers a directory here
(`use_directory`), so approvals asks through this module and names no other app.

Without a directory (approvals on its own, in a test) an agent has no website, no channel preference and no types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class AgentProfile:
    website: str = ""
    # An administrator checked who runs the agent (its website and name).
    website_verified: bool = False
    # The prompt channels the agent chose, by name, in its order; empty: the server's order.
    prompt_channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetailType:
    """An RFC 9396 type as the approval page shows it: a heading, and a display template (approvals.display)."""

    type: str
    name: str
    display_template: str


class AgentDirectory(Protocol):
    def profile(self, client: Any) -> AgentProfile: ...

    def detail_types(self, names: Iterable[str]) -> dict[str, DetailType]:
        """The enabled types among `names`, by name."""
        ...


class _NoDirectory:
    def profile(self, client: Any) -> AgentProfile:
        return AgentProfile()

    def detail_types(self, names: Iterable[str]) -> dict[str, DetailType]:
        return {}


_directory: AgentDirectory = _NoDirectory()


def use_directory(directory: AgentDirectory) -> None:
    global _directory
    _directory = directory


def profile(client: Any) -> AgentProfile:
    return _directory.profile(client)


def detail_types(names: Iterable[str]) -> dict[str, DetailType]:
    return _directory.detail_types(names)
