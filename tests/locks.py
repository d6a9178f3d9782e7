"""Races against a transaction in flight, on PostgreSQL: hold one open in a thread until the request under test is
known to wait for its row locks, rather than for a guessed number of seconds."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connection, transaction


def hold_until_another_waits(limit: float = 30) -> None:
    """Inside a transaction that holds row locks: return once another session waits for one of them (or after
    `limit` seconds), so that a concurrent request is known to have passed its checks and to be queued behind us."""
    deadline = time.monotonic() + limit
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks "
                "WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid)))"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)


def held_open(work: Any) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """Run `work` in a thread's transaction, kept open until another session waits for its locks."""
    started, errors = threading.Event(), []

    def run() -> None:
        try:
            with transaction.atomic():
                work()
                started.set()
                hold_until_another_waits()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            started.set()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started, errors
