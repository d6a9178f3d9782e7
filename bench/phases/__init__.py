"""The measured phases, each a `Phase` (bench/phases/base.py), in the order a run takes them."""

from __future__ import annotations

from bench.phases.admin_pages import AdminPages
from bench.phases.base import Context, Phase, PhaseResult
from bench.phases.closed_loop import BcAuthorize, Ceiling, PendingPolls
from bench.phases.flatness import Flatness
from bench.phases.flows import Flows
from bench.phases.peer import Peer
from bench.phases.ping import Ping
from bench.phases.profile import Profile
from bench.phases.prompts import Prompts

__all__ = ["Context", "Phase", "PhaseResult", "phases"]


def phases(only: str = "all") -> list[Phase]:
    """All of them (a-c and the peer on one gunicorn, then the others with their own), or only one."""
    if only == "peer":
        return [Peer()]
    if only == "prompts":
        return [Prompts()]
    if only == "ping":
        return [Ping()]
    if only == "flatness":
        return [Flatness()]
    if only == "flows":
        return [Flows()]
    if only == "profile":
        return [Profile()]
    if only == "admin":
        return [AdminPages()]
    return [
        Ceiling(),
        BcAuthorize(),
        PendingPolls(),
        # The ceiling again: the machine's speed drifts (a shared host), so the ratio uses the mean of both runs.
        Ceiling("ceiling-after", warmup=1),
        # Issue 17: ours (the same gunicorn) and node-oidc-provider alternately, with the peer's own bench-peer.sh.
        Peer(),
        # With their own gunicorn and a Celery worker each; the broker is emptied first.
        Prompts(),
        Ping(),
        # Issue 17, item 4: whole approvals (bc-authorize, SMS, link and decide, polls), CPU per flow per process.
        Flows(),
        # In-process, with nothing else running: where one request's time goes.
        Profile(),
        # Issue 17, item 3, last: a big store of pending requests and a grown table, each against a small twin
        # swapped in alternately, on databases, a gunicorn and a redis-server of its own. Writing and dropping a
        # million rows keeps PostgreSQL busy (checkpoints, file removal) for a while after it: phases after it were
        # slowed (a prompt phase measured p50 1 s instead of 40 ms).
        Flatness(),
        # Issue 18, item 8: the admin's pages over a million requests, on a database of its own.
        AdminPages(),
    ]
