"""The one interface of a measured phase, and the context the phases share."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from bench.common import HOST, POLL_INTERVAL_S, BenchError, log
from bench.servers import Server, Service, smoke_test, start_server
from bench.system import CpuSample, cpu_sample


class PhaseResult(Protocol):
    """What a phase measured: a dataclass of figures, which bench/report.py turns into RESULTS.md and JSON."""

    def summary(self) -> str:
        """One line for the console once the phase is over."""
        ...


R = TypeVar("R")


def result_of(results: dict[str, PhaseResult], name: str, kind: type[R]) -> R:
    """The result of the phase called `name`, which must be a `kind`."""
    found = results.get(name)
    if not isinstance(found, kind):
        raise BenchError(f"no result of phase {name!r} (found {type(found).__name__})")
    return found


class Phase(ABC):
    """A measured phase. The runner runs the phases in order, each once; a phase's result is kept in the context
    under its name for the phases after it and for the report."""

    name: str  # in the console, in raw file names under bench/out/ and as the key of its result
    # Phases a-c share one gunicorn (started by the first of them); before any other phase it is stopped, so that
    # the phase measures only the processes it starts itself.
    uses_shared_server: bool = False

    @abstractmethod
    def run(self, ctx: Context) -> PhaseResult:
        """Measure; raise BenchError with a message for the person running the benchmark when something fails.
        Everything the phase starts is stopped before it returns or raises."""


@dataclass
class Context:
    """What the phases share: the options, the set-up (database, approver, agent client), the shared gunicorn and
    the results so far."""

    args: argparse.Namespace
    port: int  # the shared gunicorn's
    env: dict[str, str]  # the server environment of the set-up
    auth: str  # the Authorization header of the set-up's agent client (client_secret_basic)
    bc_body: str  # its bc-authorize form: scope, the set-up's approver as login_hint, a binding message
    redis_pid: int | None  # the benchmark's own redis-server (None: an existing Redis, --redis-port)
    results: dict[str, PhaseResult] = field(default_factory=dict)
    interval: int = POLL_INTERVAL_S  # the poll interval the server asked for in the smoke test
    _server: Server | None = field(default=None, init=False, repr=False)

    def shared_server(self) -> Server:
        """The gunicorn of phases a-c, started (and smoke-tested) on first use."""
        if self._server is None:
            log(f"starting gunicorn: {self.args.workers} gthread workers on {HOST}:{self.port}")
            self._server = start_server(self.args, self.env, self.port)
            log(f"workers {self._server.worker_pids()}; smoke test")
            self.interval = smoke_test(self.port, self.auth, self.bc_body)
        return self._server

    def stop_shared_server(self) -> None:
        if self._server is not None:
            log("stopping gunicorn")
            self._server.stop()
            self._server = None

    def result(self, name: str, kind: type[R]) -> R:
        """The result of an earlier phase."""
        return result_of(self.results, name, kind)

    def cpu_sample(self, server: Server, worker: Service | None = None) -> CpuSample:
        return cpu_sample(server.pgrp, worker.pgrp if worker else None, self.redis_pid)
