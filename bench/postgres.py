"""PostgreSQL: the benchmark's database (dropped and recreated for each run) and the statistics it reads."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from bench.common import HOST, BenchError
from bench.servers import wait_until_drained


def admin_dsn(args: argparse.Namespace, dbname: str = "postgres") -> str:
    return f"host={HOST} port={args.pg_port} user={args.pg_user} dbname={dbname} connect_timeout=3"


def connect(args: argparse.Namespace) -> psycopg.Connection:
    """To the benchmark's database, as the admin user (reads what the service wrote, and its statistics)."""
    return psycopg.connect(admin_dsn(args, args.database), autocommit=True)


def check_postgres(args: argparse.Namespace) -> str:
    try:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {HOST}:{args.pg_port} as {args.pg_user} ({exc}).\n"
            "Start it (Debian: pg_ctlcluster 15 main start) or point --pg-port/--pg-user at one."
        ) from exc


def autovacuum_on(args: argparse.Namespace) -> bool:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        return conn.execute("SHOW autovacuum").fetchone()[0] == "on"


def analyze(args: argparse.Namespace) -> float:
    """ANALYZE the bench database; the seconds it took."""
    started = time.monotonic()
    with connect(args) as conn:
        conn.execute("ANALYZE")
    return time.monotonic() - started


def recreate_database(args: argparse.Namespace) -> None:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        name = pgsql.Identifier(args.database)
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(name))


@dataclass
class PgSnapshot:
    rows: dict[str, int]  # per table: n_tup_ins + n_tup_upd + n_tup_del
    xacts: int  # transactions committed or rolled back in the bench database


def pg_snapshot(args: argparse.Namespace, port: int) -> PgSnapshot:
    """Rows written per table and transactions so far, with every server backend's stats flushed first.

    PostgreSQL 15 flushes a backend's table counters at most once a second and, when the backend then goes idle, only
    after up to 10 s. A backend flushes everything when it exits, so once the service (listening on `port`) is idle
    its database connections are ended here; Django reconnects on the next request (CONN_HEALTH_CHECKS), inside the
    next phase's warm-up.
    """
    wait_until_drained(port)
    others = (
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    with connect(args) as conn:
        deadline = time.monotonic() + 10
        while conn.execute(f"SELECT count(*) {others}").fetchone()[0]:
            if time.monotonic() > deadline:
                raise BenchError("the service's PostgreSQL connections did not end within 10 s")
            conn.execute(f"SELECT pg_terminate_backend(pid) {others}")
            time.sleep(0.05)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables").fetchall()
        xacts = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    return PgSnapshot({name: int(count) for name, count in rows}, int(xacts))


def written_between(before: PgSnapshot, after: PgSnapshot) -> dict[str, int]:
    a, b = after.rows, before.rows
    return {t: a.get(t, 0) - b.get(t, 0) for t in a if a.get(t, 0) != b.get(t, 0)}


def add_rows(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {t: total.get(t, 0) + more.get(t, 0) for t in {*total, *more}}


def pg_sessions(args: argparse.Namespace) -> int:
    """PostgreSQL sessions opened in the benchmark's database so far."""
    with connect(args) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0])
