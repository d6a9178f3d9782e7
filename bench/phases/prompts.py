"""Phase f, prompt latency (issue 3): bc-authorize at a steady rate, open loop; a real Celery worker runs
approvals.tasks.prompt_approver_task, and the official twilio client sends the SMS to a loopback fake Twilio
(tests/fakes/twilio.py) that runs in the benchmark's own process.

Each request carries a unique binding message ("B" + number), which the SMS body quotes: latency = the fake's
received_at - the time the 200 answer was read, both time.time() in this process.
"""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlencode

from bench.common import OUT_DIR, BenchError, form_headers, free_port, http_request, log
from bench.load import OpenLoop, Shot
from bench.phases.base import Context, Phase
from bench.phases.open_loop import ArrivalStats, arrival_stats, await_arrivals, measure_load
from bench.servers import (
    Server,
    Worker,
    flush_redis,
    manage_json,
    server_env,
    start_server,
    start_worker,
    wait_until_drained,
)
from bench.system import OPEN_LOOP_CPU, fmt_cpu, group_rss_kib, wait_for_quiet
from tests.fakes.twilio import FakeTwilio, ReceivedSms

PROMPT_P50_TARGET_MS = 150
PROMPT_P99_TARGET_MS = 1000
PROMPT_WORKER_NOTE = (
    "threads, concurrency 8. A prompt costs the worker ~11-13 ms of CPU and ~19 ms of wall time (12 SQL statements "
    "and the twilio call, measured in-process), so at 50/s the worker needs about half a core and spends a third "
    "of each task waiting: 8 threads overlap those waits in "
    "one process (one GIL is enough for half a core) without prefork's pipe traffic through a main process. "
    "Measured here, 30 s at 50/s each, on a machine that other sessions' test suites kept 25-50 % busy at the time "
    "(so the figures are noisy): p50 threads/8 0.19 s and 3.0 s, threads/4 3.3 s, prefork/2 0.6 s, 6.8 s and 8.5 s "
    "(218 lost), prefork/4 5.0 s; threads/8 on a quiet machine: p50 20-26 ms, p99 108-148 ms, then 8 ms and 17 ms "
    "once the worker kept its database connections between tasks (config/celery.py)"
)
# The SMS quotes the binding message: ... Check it shows "B123": <link>
_LABEL = re.compile(r'"([A-Z]\d+)"')


def sms_label(sms: ReceivedSms) -> str | None:
    match = _LABEL.search(sms.body or "")
    return match.group(1) if match else None


# ----------------------------------------------------------------------------------------------------- statistics


def compute_stats(load: OpenLoop[Shot], messages: list[ReceivedSms]) -> ArrivalStats:
    """Each SMS matched to its request by the label it quotes; latency from the generator reading the 200 answer."""
    known = {r.label for r in load.shots}
    arrivals: dict[str, list[float]] = {}
    unmatched = 0
    for sms in messages:
        label = sms_label(sms)
        if label in known:
            arrivals.setdefault(label, []).append(sms.received_at)
        elif label is None or not label.startswith("S"):  # S*: the smoke test's
            unmatched += 1
    return arrival_stats(load, arrivals, unmatched, ok=lambda r: r.status == 200, since=lambda r: r.answered)


def warm_counts(load: OpenLoop[Shot], messages: list[ReceivedSms]) -> tuple[int, int]:
    """Warm-up requests answered 200, and how many of them got an SMS (a sanity figure)."""
    labels = {sms_label(m) for m in messages}
    warm_ok = [r for r in load.warm if r.status == 200]
    return len(warm_ok), sum(1 for r in warm_ok if r.label in labels)


@dataclass
class PromptResult:
    # What the console and RESULTS.md call the stats' sent, ok and received.
    counts: ClassVar[tuple[str, str, str]] = ("sent", "answered 200", "SMS received")

    stats: ArrivalStats
    cpu: dict[str, float]
    pg_sessions: int  # PostgreSQL sessions opened in the bench database during the measured run
    worker: str
    approvers: int
    warm: tuple[int, int]
    seconds: float  # the phase's wall time, set-up included
    # The worker's processes' resident memory (pid -> KiB) after the run, before it stops (issue 17, item 5).
    worker_rss_kib: dict[int, int] = field(default_factory=dict)

    @property
    def target_met(self) -> bool:
        st = self.stats
        return (
            st.p50_ms < PROMPT_P50_TARGET_MS
            and st.p99_ms < PROMPT_P99_TARGET_MS
            and st.lost == 0
            and st.duplicates == 0
            and st.errors == 0
        )

    def summary(self) -> str:
        st = self.stats
        return (
            f"{st.summary(self.counts, 'answer->SMS')}; CPU {fmt_cpu(self.cpu, OPEN_LOOP_CPU)}; "
            f"target {'met' if self.target_met else 'NOT met'}"
        )


# ---------------------------------------------------------------------------------------------------------- phase


def twilio_env(fake: FakeTwilio) -> dict[str, str]:
    """The server's and the worker's settings that send prompts as SMS through the twilio client to `fake`."""
    return {
        "APPROVALS_PROMPT_CHANNELS": "approvals.channels.twilio_sms.TwilioSmsChannel",
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": "+447700900001",
        "TWILIO_API_BASE": fake.base_url,
        "TWILIO_STATUS_CALLBACKS": "false",
    }


def create_sms_approvers(
    env: dict[str, str], count: int, prefix: str = "bench-sms", first_phone: int = 100
) -> list[tuple[str, str, str]]:
    """Approvers <prefix>-<i> with a phone each (fictional UK mobile numbers, +44 7700 900<first_phone + i>),
    created concurrently: [(username, password, phone)]."""
    if not 0 <= first_phone <= 999 - count:
        raise BenchError(f"phone numbers +447700900{first_phone:03d} and up: {count} do not fit")

    def one(i: int) -> tuple[str, str, str]:
        password = secrets.token_urlsafe(24)
        made = manage_json(
            env,
            "create_approver",
            f"{prefix}-{i}",
            f"--password={password}",
            "--phone",
            f"+447700900{first_phone + i:03d}",
        )
        if not made.get("phone_number"):
            raise BenchError(f"create_approver --phone stored no phone: {made}")
        return made["username"], password, made["phone_number"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


def bc_shots(hints: list[str], rate: float, warmup_s: float, duration_s: float) -> tuple[list[Shot], int]:
    """The schedule's requests, and how many of them are warm-up: login_hint rotates over the approvers, and each
    request has a unique binding_message, its label."""
    n_warm = round(warmup_s * rate)
    n_total = n_warm + round(duration_s * rate)
    shots = []
    for k in range(n_total):
        label = f"W{k}" if k < n_warm else f"B{k - n_warm}"
        body = urlencode({"scope": "openid", "login_hint": hints[k % len(hints)], "binding_message": label})
        shots.append(Shot(label=label, path="/oauth/bc-authorize/", body=body))
    return shots, n_warm


class Prompts(Phase):
    """f. bc-authorize at a steady rate, open loop; a real Celery worker sends each prompt through the twilio client
    to a fake Twilio in this process; latency = SMS accepted by the fake - bc-authorize's 200 read by the
    generator."""

    name = "prompts"

    def run(self, ctx: Context) -> PromptResult:
        args = ctx.args
        started = time.monotonic()
        fake = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
        server: Server | None = None
        worker: Worker | None = None
        try:
            port = free_port()
            env = server_env(args, port)
            env.update(twilio_env(fake))
            log(f"prompts: creating {args.prompt_approvers} approvers with a phone")
            hints = [name for name, _, _ in create_sms_approvers(env, args.prompt_approvers)]
            # Tasks queued by phases a-c (no worker ran) must not reach this worker: empty the broker first.
            flush_redis(args)
            log(
                f"prompts: fake Twilio on {fake.base_url}; gunicorn ({args.workers} gthread workers), Celery worker "
                f"({args.prompt_pool}, concurrency {args.prompt_concurrency})"
            )
            server = start_server(args, env, port, "gunicorn-prompts.log")
            worker = start_worker(args, env, "celery.log")
            # Smoke test, which also waits for the worker to be up: one request, its SMS within 30 s.
            body = urlencode({"scope": "openid", "login_hint": hints[0], "binding_message": "S1"})
            status, answer = http_request(port, "POST", "/oauth/bc-authorize/", body, form_headers(ctx.auth))
            if status != 200:
                raise BenchError(f"prompts: POST /oauth/bc-authorize/ answered {status}: {answer[:500]!r}")
            try:
                fake.wait_for_messages(1, timeout=30)
            except AssertionError as exc:
                raise BenchError(
                    f"prompts: no SMS reached the fake within 30 s ({str(exc)[:500]}).\nCelery worker log:\n"
                    f"{worker.log_tail()}"
                ) from exc
            wait_until_drained(port)
            time.sleep(1)  # let the worker go idle
            # Other processes' CPU use turns straight into queueing here (the worker's and gunicorn's share shrinks):
            # wait for a quiet machine as at the start, then note what was taken anyway.
            wait_for_quiet(args.wait_quiet, 3.0, prefix="prompts: ", shown=2)
            shots, n_warm = bc_shots(hints, args.prompt_rate, args.prompt_warmup, args.prompt_duration)
            load = OpenLoop(
                port=port,
                shots=shots,
                headers=form_headers(ctx.auth),
                rate=args.prompt_rate,
                warmup=n_warm,
                threads=64,
                name="bench-load",
            )
            log(
                f"prompts: {args.prompt_warmup} s warm-up then {args.prompt_duration} s measured at "
                f"{args.prompt_rate:g} bc-authorize/s (open loop)"
            )
            timeout = args.prompt_warmup + args.prompt_duration + 30
            cpu, sessions = measure_load(ctx, "prompts", load, server, worker, timeout)
            labels = {r.label for r in load.measured if r.status == 200}
            await_arrivals(
                "prompts", server, worker, lambda: {sms_label(m) for m in fake.messages}, labels, args.prompt_wait
            )
            messages = fake.messages
            stats = compute_stats(load, messages)
            warm = warm_counts(load, messages)
            (OUT_DIR / "prompts-requests.tsv").write_text(
                "label\tscheduled\tsent\tanswered\tstatus\terror\n"
                + "".join(
                    f"{r.label}\t{r.scheduled:.6f}\t{r.sent:.6f}\t{r.answered:.6f}\t{r.status}\t{r.error}\n"
                    for r in load.shots
                )
            )
            (OUT_DIR / "prompts-sms.tsv").write_text(
                "label\treceived_at\tto\n" + "".join(f"{sms_label(m)}\t{m.received_at:.6f}\t{m.to}\n" for m in messages)
            )
            description = worker.description
            worker_rss = group_rss_kib(worker.pgrp)
        finally:
            if worker is not None:
                worker.stop()
            if server is not None:
                server.stop()
            fake.close()
        return PromptResult(
            stats, cpu, sessions, description, len(hints), warm, time.monotonic() - started, worker_rss_kib=worker_rss
        )
