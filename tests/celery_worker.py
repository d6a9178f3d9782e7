"""The project's Celery app pointed at a real broker, and a real worker thread consuming from it, for tests.

Tests run the app eagerly with a memory:// broker (tests/settings.py). `redirected_app` switches the same app object
to another broker and a queue of its own, drops its cached connection and producer pools, and puts everything back
afterwards; `running_worker` starts celery.contrib.testing's embedded worker (a thread in this process, so it sees
the test's settings overrides) and stops it even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kombu
import kombu.pools
from celery.contrib.testing.worker import start_worker

from config.celery import app
from tests import settings as test_settings

# One broker database and one queue per xdist worker: a worker thread must never take another process's tasks,
# which point at rows in another test database. The cache uses databases 15, 14, …; the broker 7, 6, …
WORKER_INDEX = test_settings._WORKER_INDEX
BROKER_DB = 7 - WORKER_INDEX % 8
SHARED_BROKER_URL = f"redis://127.0.0.1:6379/{BROKER_DB}"
TEST_QUEUE = f"countersign-test-{test_settings.WORKER}"

_CONF_KEYS = ("broker_url", "task_always_eager", "task_default_queue", "worker_hijack_root_logger")
# kombu's cached_property stores these on the instance; they hold the queue names and the router built from them.
_AMQP_CACHED = ("queues", "default_queue", "router")


def _reset_pools() -> None:
    """Forget the app's broker connections and producers, so the next publish connects to the current broker_url."""
    pool = app._pool
    if pool is not None:
        pool.force_close_all()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
        for name in _AMQP_CACHED:
            amqp.__dict__.pop(name, None)
        amqp._rtable = None
    # The producer pool comes from kombu's process-wide pools, keyed by broker URL: closing it alone would hand
    # the next test a closed pool ("Acquire on closed pool"). Only the project's app uses kombu here.
    kombu.pools.reset()


def same_broker(connection: kombu.Connection, url: str) -> bool:
    expected = kombu.Connection(url)
    fields = ("transport_cls", "hostname", "port", "virtual_host")
    return all(str(getattr(connection, name)) == str(getattr(expected, name)) for name in fields)


@contextmanager
def redirected_app(broker_url: str, *, queue: str = TEST_QUEUE) -> Iterator[Any]:
    """The project's app publishing to broker_url (not eagerly) on its own queue, restored on exit."""
    saved = {key: app.conf[key] for key in _CONF_KEYS}
    # Celery reads the CELERY_BROKER_URL environment variable before its configuration (tests/settings.py sets it to
    # memory://), so the variable has to change too, or both sides silently keep using the in-process broker.
    saved_env = os.environ.get("CELERY_BROKER_URL")
    _reset_pools()
    os.environ["CELERY_BROKER_URL"] = broker_url
    app.conf.update(
        broker_url=broker_url,
        task_always_eager=False,
        task_default_queue=queue,
        # Leave pytest's log capture alone.
        worker_hijack_root_logger=False,
    )
    try:
        with app.connection_for_write() as conn:
            assert same_broker(conn, broker_url), conn.as_uri()
        yield app
    finally:
        _reset_pools()
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env
        app.conf.update(saved)
        _reset_pools()


@contextmanager
def running_worker(*, shutdown_timeout: float = 15) -> Iterator[Any]:
    """A real worker thread (solo pool) consuming the app's default queue from its current broker."""
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        shutdown_timeout=shutdown_timeout,
        queues=[app.conf.task_default_queue],
    ) as worker:
        connection = worker.consumer.connection
        assert same_broker(connection, app.conf.broker_url), f"the worker consumes from {connection.as_uri()}"
        yield worker


def flush_broker_db(url: str) -> None:
    """Drop tasks a crashed earlier run may have left in this worker's broker database (ours alone)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10, interval: float = 0.05, what: str = "") -> Any:
    """Poll predicate until it returns something truthy; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# --- a dedicated redis-server the test can stop and start -------------------------------------------------------------


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """`redis-server` on 127.0.0.1:port without persistence; stop() and start() again on the same port."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(  # noqa: S603 (a fixed binary found on PATH)
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=timeout, what=f"redis-server on port {self.port}")

    def stop(self, timeout: float = 10) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self.process = None

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def in_ci() -> bool:
    return test_settings.IN_CI or os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextmanager
def published_tasks() -> Iterator[Callable[[], list[tuple[str, list[Any]]]]]:
    """Tasks are published to the in-process memory:// broker instead of running eagerly; yields a function that
    takes the published messages off the queue and returns (task name, args) for each."""

    def drain() -> list[tuple[str, list[Any]]]:
        taken = []
        with app.connection_for_read() as conn:
            queue = conn.SimpleQueue(app.conf.task_default_queue)
            try:
                while True:
                    try:
                        message = queue.get_nowait()
                    except queue.Empty:
                        break
                    message.ack()
                    args, _kwargs, _embed = message.decode()
                    taken.append((message.headers["task"], args))
            finally:
                queue.close()
        return taken

    saved = app.conf.task_always_eager
    assert app.conf.broker_url == "memory://", app.conf.broker_url
    app.conf.task_always_eager = False
    try:
        drain()
        yield drain
    finally:
        drain()
        app.conf.task_always_eager = saved
