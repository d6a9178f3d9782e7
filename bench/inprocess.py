"""Where one request's time goes, in-process (issue 17's "profile that explains where a request's time goes").

Run by bench/phases/profile.py as `python -m bench.inprocess` with the server's environment (the benchmark's
database, Redis and settings, DEBUG off): it loads Countersign as a gunicorn worker does (config.wsgi), then calls
the WSGI application directly, without HTTP or gunicorn, for bc-authorize and for token polls, first unprofiled (the
time per request, wall and CPU, and the SQL statements and Redis commands each sends) and then under cProfile (the
time per request split by what spends it). Prints one JSON object.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

# What spends the time, by where a function lives, in this order (the first match wins); tottime (a function's own
# time, without what it calls) is summed per category, so the categories add up to the whole.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PostgreSQL driver (psycopg, waiting for answers included)", ("/psycopg/", "/psycopg_c/", "/psycopg_binary/")),
    ("Redis client (redis-py, waiting for answers included)", ("/redis/",)),
    ("Celery and kombu (building and publishing the prompt task)", ("/celery/", "/kombu/", "/vine/", "/amqp/")),
    ("Django ORM and database layer", ("/django/db/",)),
    (
        "Django request handling (handler, middleware, URLs, HTTP objects)",
        (
            "/django/core/",
            "/django/http/",
            "/django/urls/",
            "/django/middleware/",
            "/django/utils/",
            "/django/views/",
            "/django/dispatch/",
            "/django/conf/",
            "/django/contrib/",
        ),
    ),
    ("oauthlib and django-oauth-toolkit", ("/oauthlib/", "/oauth2_provider/")),
    ("cryptography and JOSE", ("/cryptography/", "/jwt/", "/jwcrypto/")),
    ("Countersign's own code (authz, approvals, config)", ("/authz/", "/approvals/", "/config/")),
    ("logging", ("/logging/",)),
)
OTHER = "Python's standard library and builtins, not called from the above"


def category(filename: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in filename for n in needles):
            return name
    return OTHER


Func = tuple[str, int, str]


def split_by_category(stats: dict[Func, Any]) -> tuple[Counter[str], float]:
    """Each function's own time by category, and the total. The standard library and builtins (a socket's recv, a
    lock, json) belong to whoever called them: their time goes to their callers' categories, in proportion to the
    time each call edge spent, up the chain until a categorised caller (cycles and the top of the stack: OTHER)."""
    resolved: dict[Func, dict[str, float]] = {}

    def shares(func: Func, seen: frozenset[Func]) -> dict[str, float]:
        own = category(func[0])
        if own != OTHER:
            return {own: 1.0}
        if func in resolved:
            return resolved[func]
        callers = stats[func][4] if func in stats else {}
        total = sum(edge[2] for edge in callers.values())
        if not callers or total <= 0 or func in seen:
            return {OTHER: 1.0}
        mix: Counter[str] = Counter()
        for caller, edge in callers.items():
            for name, share in shares(caller, seen | {func}).items():
                mix[name] += share * edge[2] / total
        resolved[func] = dict(mix)
        return resolved[func]

    per_category: Counter[str] = Counter()
    total = 0.0
    for func, (_cc, _nc, tottime, _cum, _callers) in stats.items():
        total += tottime
        for name, share in shares(func, frozenset()).items():
            per_category[name] += tottime * share
    return per_category, total


def environ(method: str, path: str, body: bytes, authorization: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        return {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": os.environ["BENCH_PORT"],
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": f"127.0.0.1:{os.environ['BENCH_PORT']}",
            "HTTP_AUTHORIZATION": authorization,
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }

    return make


class Counts:
    """SQL statements (a Django execute wrapper) and Redis commands (redis-py's connection send) while active."""

    def __init__(self) -> None:
        self.sql = 0
        self.redis = 0
        self.active = False

    def sql_wrapper(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.active:
            self.sql += 1
        return execute(sql, params, many, context)

    @contextmanager
    def counting(self) -> Iterator[None]:
        from redis.connection import AbstractConnection

        send = AbstractConnection.send_packed_command

        def counted(conn: Any, command: Any, check_health: bool = True) -> Any:
            if self.active:
                # A pipeline sends its commands in one packed write: count the commands, not the writes.
                self.redis += len(command) if isinstance(command, list) else 1
            return send(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = send  # type: ignore[method-assign]


def main() -> None:
    import django
    from django.db import connections

    django.setup()
    from config.wsgi import application

    n = int(os.environ.get("BENCH_PROFILE_N", "400"))
    out_dir = os.environ.get("BENCH_OUT_DIR", "")  # the full pstats listings, for reading
    auth = os.environ["BENCH_AUTH"]
    bc_body = os.environ["BENCH_BODY"].encode()
    answers: Counter[str] = Counter()

    def call(make: Callable[[], dict[str, Any]]) -> tuple[str, bytes]:
        status: list[str] = []
        body = b"".join(application(make(), lambda s, h, exc_info=None: status.append(s)))
        return status[0], body

    ids: list[str] = []

    def bc() -> None:
        status, body = call(environ("POST", "/oauth/bc-authorize/", bc_body, auth))
        if not status.startswith("200"):
            raise SystemExit(f"bc-authorize answered {status}: {body[:300]!r}")
        ids.append(json.loads(body)["auth_req_id"])

    def poll_factory(auth_req_id: str) -> Callable[[], dict[str, Any]]:
        form = urlencode({"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": auth_req_id}).encode()
        return environ("POST", "/oauth/token/", form, auth)

    def poll(make: Callable[[], dict[str, Any]], kind: str) -> None:
        status, body = call(make)
        error = json.loads(body).get("error", "ok") if body.startswith(b"{") else status
        answers[f"{kind}: {error}"] += 1

    counts = Counts()
    for alias in connections:
        connections[alias].execute_wrappers.append(counts.sql_wrapper)

    results: dict[str, Any] = {}
    with counts.counting():
        for _ in range(50):  # warm-up: imports, connections, caches
            bc()
        one_id = poll_factory(ids[0])
        for _ in range(50):
            poll(one_id, "warm-up")

        def measure(name: str, run: Callable[[int], None], count: int) -> None:
            counts.sql = counts.redis = 0
            counts.active = True
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(count):
                run(i)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            counts.active = False
            profile = cProfile.Profile()
            profile.enable()
            for i in range(count):
                run(count + i)
            profile.disable()
            stats = pstats.Stats(profile)
            if out_dir:
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
                pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(60)
                slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
                with open(os.path.join(out_dir, f"profile-{slug}.txt"), "w") as f:
                    f.write(text.getvalue())
            per_category, total = split_by_category(stats.stats)  # type: ignore[attr-defined]
            ours: list[tuple[str, float]] = []
            for (filename, line, fn), (_cc, _nc, _tot, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
                for root in ("/authz/", "/approvals/", "/config/"):
                    if root in filename and "/site-packages/" not in filename:
                        short = filename[filename.index(root) + 1 :]
                        ours.append((f"{short}:{line} {fn}", cumtime))
            ours.sort(key=lambda item: -item[1])
            results[name] = {
                "requests": count,
                "wall_ms": 1000 * wall / count,
                "cpu_ms": 1000 * cpu / count,
                "sql_per_request": counts.sql / count,
                "redis_commands_per_request": counts.redis / count,
                "profiled_ms": 1000 * total / count,
                "categories_ms": {k: 1000 * v / count for k, v in per_category.most_common()},
                "ours_cumulative_ms": [(name, 1000 * cum / count) for name, cum in ours[:12]],
            }

        measure("bc-authorize", lambda i: bc(), n)
        fresh = ids[50:]  # made by the measured bc-authorize runs, each polled once, after the interval
        interval = int(os.environ.get("BENCH_INTERVAL", "5"))
        time.sleep(interval + 0.5)
        measure("poll, pending ids (each polled once)", lambda i: poll(poll_factory(fresh[i]), "pending ids"), n)
        measure("poll, one id (slow_down)", lambda i: poll(one_id, "one id"), n)
    results["answers"] = dict(answers)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
