"""The measured phases, each a `Phase` (bench/phases/base.py), in the order a run takes them."""

from __future__ import annotations

from bench.phases.base import Context, Phase, PhaseResult
from bench.phases.closed_loop import BcAuthorize, Ceiling, PendingPolls
from bench.phases.peer import Peer
from bench.phases.ping import Ping
from bench.phases.prompts import Prompts

__all__ = ["Context", "Phase", "PhaseResult", "phases"]


def phases(only: str = "all") -> list[Phase]:
    """All of them (a-c and the peer on one gunicorn, then f and g with their own), or only one of the peer, the
    prompts or the ping phase."""
    if only == "peer":
        return [Peer()]
    if only == "prompts":
        return [Prompts()]
    if only == "ping":
        return [Ping()]
    return [
        Ceiling(),
        BcAuthorize(),
        PendingPolls(),
        # The ceiling again: the machine's speed drifts (a shared host), so the ratio uses the mean of both runs.
        Ceiling("ceiling-after", warmup=1),
        # Issue 17: ours (the same gunicorn) and node-oidc-provider alternately, with the peer's own bench-peer.sh.
        Peer(),
        # Last, with their own gunicorn and a Celery worker each; the broker is emptied first.
        Prompts(),
        Ping(),
    ]
